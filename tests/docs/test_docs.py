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
from conftest import needs_fashion

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


#: The library's warnings a page's code gives, as a user who runs it sees them: these pages
#: search on a small subset, whose search-validation split (a fifth) is smaller than the
#: default batch of 128, and the data module says so as it shrinks that batch.
PAGE_WARNINGS = {
    "index": "search-validation split has only 102 samples",
    "cli": "search-validation split has only 51 samples",
    "mixin": "search-validation split has only 51 samples",
}


# the CLI tutorial's "use alpha_T" run replays final weights with the KD pathway on purpose
@pytest.mark.filterwarnings("ignore:ProcessScheduleCallback.mode='final'. with the:UserWarning")
# ... and its 2-step cheap-recipe search updates alpha once, which the search says
@pytest.mark.filterwarnings("ignore:search.schedule.every_n_steps=4 with a fit of:UserWarning")
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_tutorial_code_runs(page, workdir):
    expected = PAGE_WARNINGS.get(page.stem)
    with pytest.warns(UserWarning, match=expected) if expected else nullcontext():
        ran = _run_page(page, workdir)
    assert ran > 0, f"{page.name} has no runnable code"


def _run_page(page: Path, workdir: Path) -> int:
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
    return ran


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
    raw = re.compile(r":(meth|class|func|attr|mod|obj):`")
    pages = sorted((tmp_path / "site" / "reference").rglob("*.html"))
    assert pages and [p.name for p in pages if raw.search(p.read_text())] == []


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not link.startswith(("http://", "https://", "mailto:"))]
    assert local, "README links to the docs"
    for link in local:
        assert (ROOT / link).exists(), link


def _python_blocks(page: Path) -> list[str]:
    return [code for lang, _, code in _blocks(page) if lang == "python"]


DOC_PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_snippet_in_the_docs_is_valid_python(page):
    """Every ``python`` block of the README and the docs compiles (the tutorials' and the
    README quickstart's also run: `test_tutorial_code_runs`, `test_readme_quickstart_runs`)."""
    for code in _python_blocks(page):
        compile(code, f"{page.name} snippet", "exec")


@needs_fashion
def test_readme_quickstart_runs(workdir, monkeypatch):
    """The README's quickstart block verbatim, as a user pastes it in the clone's root after
    the two commands: the teacher it names is the committed file (nothing is made first),
    at a tiny size (the Trainer it imports runs 2 training batches per epoch). The retrain
    raises no warning about a missing validation loader."""

    import lightning.pytorch as lp

    from distpro_lightning import DistillationProcess

    teachers = workdir / "benchmarks" / "results"
    teachers.mkdir(parents=True)
    (teachers / "teachers").symlink_to(ROOT / "benchmarks" / "results" / "teachers")
    text = (ROOT / "README.md").read_text()
    quickstart = text.split("## Quickstart", 1)[1]
    code = _python_blocks_of(quickstart)[0]
    real = lp.Trainer

    def tiny(**kw):
        kw.update(limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
        kw.update(logger=False, enable_checkpointing=False, enable_progress_bar=False)
        return real(**kw)

    monkeypatch.setattr(lp, "Trainer", tiny)
    # 2 batches: the cheap recipe's alpha (every 4th step) moves once, which the search says
    with pytest.warns(
        UserWarning, match="every_n_steps=4 with a fit of 2 optimizer steps"
    ) as caught:
        runpy.run_path(str(_write(workdir / "quickstart.py", code)), run_name="__main__")
    process = DistillationProcess.load(workdir / "process.json")
    assert len(process) == 2 and process.num_pathways == 11  # 9 conv_bn + KD + review
    shown = [str(w.message) for w in caught]
    empty = ("val_dataloader", "validation", "across ranks is zero")
    assert not any(e in m for m in shown for e in empty), shown


def _python_blocks_of(text: str) -> list[str]:
    return [m.group(3) for m in BLOCK.finditer(text) if m.group(1) == "python"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_package_and_the_process_format_are_versioned_as_the_docs_say():
    """The package is past 0.1, whose flat keywords the README calls the old API; the
    process-format page's version table names the package's version and the format it
    writes."""
    from distpro_lightning import __version__
    from distpro_lightning.process.format import FORMAT_VERSION

    major_minor = tuple(int(x) for x in __version__.split(".")[:2])
    assert major_minor > (0, 1)
    assert "Version 0.1's flat keywords" in (ROOT / "README.md").read_text()
    page = (DOCS / "process-format.md").read_text()
    row = next(li for li in page.splitlines() if li.startswith(f"| {__version__} |"))
    assert row.split("|")[3].strip() == str(FORMAT_VERSION)
    assert f"| `version` | `{FORMAT_VERSION}`" in page
