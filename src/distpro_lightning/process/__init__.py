"""The distillation process: `DistillationProcess` (record, load, interpolate), its file
format, transfer maps and plots. A leaf: imports nothing above it."""

from distpro_lightning.process.core import DistillationProcess
from distpro_lightning.process.format import ProcessFileError

__all__ = ["DistillationProcess", "ProcessFileError"]
