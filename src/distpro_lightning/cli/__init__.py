"""The ``distpro`` console script: LightningCLI subcommands, process commands, sweeps and the
demo."""

from distpro_lightning.cli.main import main

__all__ = ["main"]
