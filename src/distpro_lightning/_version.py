"""The package version (one place; read by the package, the process provenance and
setuptools)."""

__version__ = "0.3.0"
