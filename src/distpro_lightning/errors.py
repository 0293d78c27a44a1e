"""The one base of the library's own exceptions: ``except DistProError`` catches every error
the library raises on purpose (a bad file, a bad path, a bad tap, a failed search), while
each keeps the built-in base it always had (``ValueError``, ``RuntimeError``)."""


class DistProError(Exception):
    """Base of every exception raised on purpose by distpro-lightning."""
