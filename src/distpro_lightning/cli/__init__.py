"""The ``distpro`` console script: LightningCLI subcommands, process commands, sweeps and the
demo."""

from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> Any:  # ``main`` on first use: the package imports nothing
    if name == "main":
        from distpro_lightning.cli.main import main

        return main
    raise AttributeError(f"module 'distpro_lightning.cli' has no attribute {name!r}")
