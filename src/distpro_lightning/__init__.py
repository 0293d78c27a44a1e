"""DistPro for PyTorch Lightning: search and replay a knowledge-distillation process."""

__version__ = "0.1.0"

from .checkpoints import load_teacher, load_weights  # noqa: E402
from .classifier import ClassifierModule  # noqa: E402
from .contract import TeacherOutput  # noqa: E402
from .mixin import DistillationConfig, DistProMixin  # noqa: E402
from .module import DistProModule  # noqa: E402
from .process import DistillationProcess, ProcessFileError  # noqa: E402
from .schedule import ProcessScheduleCallback  # noqa: E402
from .search import ProcessSearchCallback  # noqa: E402
from .search_step import SearchSettings, SearchStep  # noqa: E402
from .student_io import export_student, load_student  # noqa: E402

__all__ = [
    "ClassifierModule",
    "DistProMixin",
    "DistillationConfig",
    "DistProModule",
    "DistillationProcess",
    "ProcessFileError",
    "ProcessScheduleCallback",
    "ProcessSearchCallback",
    "SearchSettings",
    "SearchStep",
    "TeacherOutput",
    "__version__",
    "export_student",
    "load_student",
    "load_teacher",
    "load_weights",
]
