"""The documentation: it builds without warnings, every tutorial's code runs, links resolve."""

from __future__ import annotations

import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"```(\w+)([^\n]*)\n(.*?)```", re.S)
PAGES = [DOCS / "index.md", *sorted((DOCS / "tutorials").glob("*.md"))]


def _blocks(page: Path):
    return [(m.group(1), m.group(2), m.group(3)) for m in BLOCK.finditer(page.read_text())]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_tutorial_code_runs(page, workdir):
    from distpro_lightning.cli.main import main

    ran = 0
    for lang, info, code in _blocks(page):
        title = re.search(r'title="([^"]+)"', info)
        if lang == "python" and title:
            script = workdir / title.group(1)
            script.write_text(code)
            env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
            proc = subprocess.run(
                [sys.executable, str(script)],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            ran += 1
        elif lang == "python":
            script = workdir / "snippet.py"
            script.write_text(code)
            runpy.run_path(str(script), run_name="__main__")
            ran += 1
        elif lang == "bash" and page.stem == "cli":
            for line in code.strip().splitlines():
                args = shlex.split(line)
                assert args[0] == "distpro"
                with pytest.raises(SystemExit) if args[1] == "process" else nullcontext():
                    main(args[1:])
                ran += 1
    assert ran > 0, f"{page.name} has no runnable code"


def test_docs_build_strict(tmp_path):
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "callbacks" / "index.html").is_file()


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not link.startswith(("http://", "https://", "mailto:"))]
    assert local, "README links to the docs"
    for link in local:
        assert (ROOT / link).exists(), link
