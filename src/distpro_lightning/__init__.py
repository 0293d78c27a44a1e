"""DistPro for PyTorch Lightning: search and replay a knowledge-distillation process.

The public names are imported on first use (PEP 562), so that a light command such as
``distpro process summary FILE`` does not import Lightning, torchmetrics and the model zoo.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from distpro_lightning._version import __version__

#: Each public name and the module that defines it.
_PUBLIC: dict[str, str] = {
    "AlphaConfig": "distpro_lightning.search.settings",
    "ClassifierModule": "distpro_lightning.modules.classifier",
    "DistProMixin": "distpro_lightning.modules.mixin",
    "DistillationConfig": "distpro_lightning.modules.mixin",
    "DistProModule": "distpro_lightning.modules.distpro",
    "DistillationProcess": "distpro_lightning.process.core",
    "HypergradientConfig": "distpro_lightning.search.settings",
    "OptimizerConfig": "distpro_lightning.modules.student",
    "OutputConfig": "distpro_lightning.search.settings",
    "PredictionWriter": "distpro_lightning.modules.predictions",
    "ProcessFileError": "distpro_lightning.process.core",
    "ProcessScheduleCallback": "distpro_lightning.replay",
    "ProcessSearchCallback": "distpro_lightning.search.callback",
    "ScheduleConfig": "distpro_lightning.search.settings",
    "SearchSettings": "distpro_lightning.search.step",
    "SearchStep": "distpro_lightning.search.step",
    "TeacherOutput": "distpro_lightning.modules.contract",
    "export_student": "distpro_lightning.modules.student_io",
    "load_student": "distpro_lightning.modules.student_io",
    "load_teacher": "distpro_lightning.modules.checkpoints",
    "load_weights": "distpro_lightning.modules.checkpoints",
}

#: The same names, listed for tools that read ``__all__`` statically.
__all__ = [
    "AlphaConfig",
    "ClassifierModule",
    "DistProMixin",
    "DistillationConfig",
    "DistProModule",
    "DistillationProcess",
    "HypergradientConfig",
    "OptimizerConfig",
    "OutputConfig",
    "PredictionWriter",
    "ProcessFileError",
    "ProcessScheduleCallback",
    "ProcessSearchCallback",
    "ScheduleConfig",
    "SearchSettings",
    "SearchStep",
    "TeacherOutput",
    "export_student",
    "load_student",
    "load_teacher",
    "load_weights",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'distpro_lightning' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


if TYPE_CHECKING:  # the names as static imports, for type checkers and documentation
    from distpro_lightning.modules.checkpoints import load_teacher, load_weights
    from distpro_lightning.modules.classifier import ClassifierModule
    from distpro_lightning.modules.contract import TeacherOutput
    from distpro_lightning.modules.distpro import DistProModule
    from distpro_lightning.modules.mixin import DistillationConfig, DistProMixin
    from distpro_lightning.modules.predictions import PredictionWriter
    from distpro_lightning.modules.student import OptimizerConfig
    from distpro_lightning.modules.student_io import export_student, load_student
    from distpro_lightning.process.core import DistillationProcess, ProcessFileError
    from distpro_lightning.replay import ProcessScheduleCallback
    from distpro_lightning.search.callback import ProcessSearchCallback
    from distpro_lightning.search.settings import (
        AlphaConfig,
        HypergradientConfig,
        OutputConfig,
        ScheduleConfig,
    )
    from distpro_lightning.search.step import SearchSettings, SearchStep
