"""The house rules of docs/architecture.md, checked: the layers and acyclic packages of
``.importlinter`` (import-linter), and a small top level."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
        "functional", "pathways", "process", "modules", "search", "baselines", "cli",
        "models", "data",
    }  # fmt: skip
    text = (ROOT / "docs" / "architecture.md").read_text()
    for name in packages + modules:
        assert f"`{name}" in text, f"docs/architecture.md does not place {name}"
