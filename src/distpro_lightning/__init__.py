"""DistPro for PyTorch Lightning: search and replay a knowledge-distillation process."""

__version__ = "0.1.0"

from .checkpoints import load_teacher, load_weights  # noqa: E402
from .classifier import ClassifierModule  # noqa: E402
from .module import DistProMixin, DistProModule, TeacherOutput  # noqa: E402
from .process import DistillationProcess, ProcessFileError  # noqa: E402
from .schedule import ProcessScheduleCallback  # noqa: E402
from .search import ProcessSearchCallback  # noqa: E402

__all__ = [
    "ClassifierModule",
    "DistProMixin",
    "DistProModule",
    "DistillationProcess",
    "ProcessFileError",
    "ProcessScheduleCallback",
    "ProcessSearchCallback",
    "TeacherOutput",
    "__version__",
    "load_teacher",
    "load_weights",
]
