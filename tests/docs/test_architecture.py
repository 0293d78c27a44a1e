"""The house rules of docs/architecture.md, checked: the layers and acyclic packages of
``.importlinter`` (import-linter), and a small top level; and the only weights in git: the
documented teachers of benchmarks/results/teachers/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "distpro_lightning"


def test_import_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run(
        [str(lint), "--config", str(ROOT / ".importlinter")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout


def test_top_level_holds_few_modules_and_every_package_is_a_concept():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert len(modules) <= 12, modules
    assert set(packages) == {
        "functional", "pathways", "process", "modules", "search", "baselines", "compare",
        "cli", "models", "data",
    }  # fmt: skip
    text = (ROOT / "docs" / "architecture.md").read_text()
    for name in packages + modules:
        assert f"`{name}" in text, f"docs/architecture.md does not place {name}"


def _unguarded_writes(path: Path) -> list[str]:
    """Calls in ``path`` that write a file in place: ``write_text``/``write_bytes``, and
    ``savefig``/``torch.save`` into anything but the open file of the atomic writer
    (``fh``) or a temporary folder's file (``png`` beside ``tempfile``)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name = node.func.attr
        target = node.args[0] if name == "savefig" and node.args else None
        if name == "save" and isinstance(node.func.value, ast.Name):
            target = node.args[1] if node.func.value.id == "torch" and len(node.args) > 1 else None
        if name in ("write_text", "write_bytes") or (
            target is not None and not (isinstance(target, ast.Name) and target.id == "fh")
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


def test_every_file_the_package_and_the_benchmarks_write_is_written_atomically():
    # docs/architecture.md: files.py is the one writer; a reader (a resumed evidence run, a
    # replay, a sweep) never sees half a file.
    files = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    found = [hit for f in files for hit in _unguarded_writes(f)]
    # the W&B image is saved into a TemporaryDirectory and handed to wandb.Image
    allowed = {"src/distpro_lightning/process/plots.py"}
    assert [h for h in found if h.split(":")[0] not in allowed] == []
    assert len(found) == 1, found  # the rule sees a real in-place write (the W&B one)


def test_every_error_class_derives_from_distpro_error_and_is_documented():
    import importlib
    import inspect
    import pkgutil

    import distpro_lightning
    from distpro_lightning.errors import DistProError

    classes = set()
    for info in pkgutil.walk_packages(distpro_lightning.__path__, "distpro_lightning."):
        for _, obj in inspect.getmembers(importlib.import_module(info.name), inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("distpro_lightning"):
                classes.add(obj)
    own = {c.__name__ for c in classes if c is not DistProError}
    assert {c.__name__ for c in classes if not issubclass(c, DistProError)} == set()
    assert len(own) >= 8, own
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert [n for n in sorted(own) if f"`{n}`" not in text] == []


def test_benchmarks_import_only_the_librarys_public_names():
    """``benchmarks/`` uses the library as a user would: named, public submodules and
    names (no ``_private`` module or name), so a benchmark times the code users run."""
    import ast

    private = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "distpro_lightning"
            ):
                parts = node.module.split(".") + [a.name for a in node.names]
                private += [f"{path.name}: {node.module}" for p in parts if p.startswith("_")]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("distpro_lightning") and any(
                        p.startswith("_") for p in alias.name.split(".")
                    ):
                        private.append(f"{path.name}: {alias.name}")
    assert private == []
    assert list((ROOT / "benchmarks").glob("*.py"))  # the check saw the benchmarks


WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".tar", ".safetensors", ".onnx")
TEACHERS = "benchmarks/results/teachers"


def test_every_weight_file_in_git_is_a_documented_teacher():
    # The only weights kept in git are the quality protocols' teachers, in one folder whose
    # README.md gives each file's provenance.
    proc = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("not a git checkout")
    weights = [f for f in proc.stdout.splitlines() if f.lower().endswith(WEIGHT_SUFFIXES)]
    assert weights, "the committed teachers are missing"
    assert [f for f in weights if Path(f).parent.as_posix() != TEACHERS] == []
    readme = (ROOT / TEACHERS / "README.md").read_text()
    assert [f for f in weights if f"| `{Path(f).name}` |" not in readme] == []
    listed = re.findall(r"^\| `([^`]+)` \|", readme, flags=re.M)
    assert sorted(listed) == sorted(Path(f).name for f in weights), "README lists a file git lacks"
