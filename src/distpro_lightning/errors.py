"""The one base of the library's own exception classes: ``except DistProError`` catches a
bad process file, output path, checkpoint, tap or held-out split, a failed search step and a
config that would be overwritten, while each keeps its built-in base (``ValueError``,
``RuntimeError``, ``FileExistsError``). A bad argument to a constructor is a plain
``ValueError`` or ``TypeError``, as in Lightning and torch."""


class DistProError(Exception):
    """Base of the library's own exception classes (see the module docs)."""
