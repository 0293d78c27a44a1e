"""nox sessions. All reuse the project's `.venv` (created by scripts/setup.sh), so nothing is
installed twice:  `nox -s tests`, `nox -s slow`, `nox -s lint`, `nox -s docs`, `nox -s demo`."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "tests", "slow", "docs"]
PY = ".venv/bin/python"
# worksteal: a worker that runs out of tests takes queued ones from the other, so both cores
# stay busy to the end (the default `load` leaves one idle while the other runs the tail)
PYTEST = [PY, "-m", "pytest", "-q", "-n", "2", "--dist", "worksteal"]


def _setup(session: nox.Session) -> None:
    session.run("bash", "scripts/setup.sh", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """The default test tier: the README's command, which .ci/run runs first."""
    _setup(session)
    session.run(*PYTEST, *session.posargs, external=True)


@nox.session
def slow(session: nox.Session) -> None:
    """The slow tier (`@pytest.mark.slow`), which .ci/run runs second."""
    _setup(session)
    session.run(*PYTEST, "-m", "slow", *session.posargs, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check + ruff format --check."""
    _setup(session)
    session.run(".venv/bin/ruff", "check", ".", external=True)
    session.run(".venv/bin/ruff", "format", "--check", ".", external=True)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with warnings as errors."""
    _setup(session)
    session.run(".venv/bin/mkdocs", "build", "--strict", external=True)


@nox.session
def demo(session: nox.Session) -> None:
    """The end-to-end Fashion-MNIST demo."""
    _setup(session)
    session.run(".venv/bin/distpro", "demo", *session.posargs, external=True)
