"""DistPro for PyTorch Lightning: search and replay a knowledge-distillation process."""

from distpro_lightning._version import __version__
from distpro_lightning.modules.checkpoints import load_teacher, load_weights  # noqa: E402
from distpro_lightning.modules.classifier import ClassifierModule  # noqa: E402
from distpro_lightning.modules.contract import TeacherOutput  # noqa: E402
from distpro_lightning.modules.distpro import DistProModule  # noqa: E402
from distpro_lightning.modules.mixin import DistillationConfig, DistProMixin  # noqa: E402
from distpro_lightning.modules.predictions import PredictionWriter  # noqa: E402
from distpro_lightning.modules.student import OptimizerConfig  # noqa: E402
from distpro_lightning.modules.student_io import export_student, load_student  # noqa: E402
from distpro_lightning.process.core import DistillationProcess, ProcessFileError  # noqa: E402
from distpro_lightning.replay import ProcessScheduleCallback  # noqa: E402
from distpro_lightning.search.callback import ProcessSearchCallback  # noqa: E402
from distpro_lightning.search.settings import (  # noqa: E402
    AlphaConfig,
    HypergradientConfig,
    OutputConfig,
    ScheduleConfig,
)
from distpro_lightning.search.step import SearchSettings, SearchStep  # noqa: E402

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
    "__version__",
    "export_student",
    "load_student",
    "load_teacher",
    "load_weights",
]
