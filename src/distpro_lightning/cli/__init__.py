"""The ``distpro`` console script: LightningCLI subcommands, process commands, sweeps and the
demo. Its entry point is `distpro_lightning.cli.main.main`; the package itself imports
nothing (a process command must not import Lightning)."""
