"""The runner of a comparison: it plans, runs the tasks (``jobs`` at a time, each in its
own process when ``jobs > 1``) and writes the results file atomically after every finished
task, so a killed comparison loses only the tasks it was running; a later call resumes it
(finished tasks are never run again) under the same settings only.

The results file (JSON): ``settings`` (as given), ``effective`` (after a budget cut),
``cuts``, ``estimate``, ``history`` (one line per call) and ``records``: one per finished
search or run, with its settings, validation and test top-1, wall time, steps, pairing
fingerprints and the process it replayed."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distpro_lightning.compare.budget import duration, estimate, fit_budget, measure
from distpro_lightning.compare.pair import Pair
from distpro_lightning.compare.plan import Record, Task, plan, resolve
from distpro_lightning.compare.report import write_report
from distpro_lightning.compare.results_file import VERSION, adopt_processes, read_results
from distpro_lightning.compare.runs import execute, lightning_info_off
from distpro_lightning.compare.schedule import schedule
from distpro_lightning.compare.settings import CompareSettings
from distpro_lightning.compare.worker import parent_env
from distpro_lightning.errors import DistProError
from distpro_lightning.files import atomic_write_text, folder_lock

RESUME_IGNORES = ("results", "jobs", "budget")  # settings a resumed file may differ in


class PairingError(DistProError, RuntimeError):
    """Two runs of one seed did not start from the same student or batches."""


def given_settings(settings: CompareSettings, pair: Pair) -> dict[str, Any]:
    out = {k: v for k, v in settings.as_dict().items() if k not in RESUME_IGNORES}
    return json.loads(json.dumps({"compare": out, "pair": dict(pair.description)}))


def load_payload(path: Path, settings: CompareSettings, pair: Pair) -> dict[str, Any]:
    """The results file to resume (refused when made under other settings), or a new one."""
    given = given_settings(settings, pair)
    if not path.is_file():
        return {"version": VERSION, "settings": given, "history": [], "records": []}
    payload = read_results(path)
    if "files" not in payload.get("settings", {}).get("pair", {"files": None}):
        given["pair"].pop("files", None)  # a file from before files were recorded (0.2)
    if payload.get("settings") != given:
        there = payload.get("settings", {})
        differ = [
            f"{part}.{k}"
            for part in ("compare", "pair")
            for k in set(given[part]) | set(there.get(part, {}))
            if given[part].get(k) != there.get(part, {}).get(k)
        ]
        values = [
            f"{k}: {there.get('compare', {}).get(k)!r} there, {given['compare'].get(k)!r} now"
            for k in sorted(set(given["compare"]) | set(there.get("compare", {})))
            if f"compare.{k}" in differ
        ]
        shown = f" ({'; '.join(values)})" if values else ""
        raise ValueError(
            f"compare: {path} holds runs made under other settings ({', '.join(sorted(differ))}"
            f"){shown}. Give the same settings to resume it, or another compare.results file."
        )
    return payload


def check_pairing(records: list[Record], new: Record) -> None:
    """Refuse a run whose initial student or first batches differ from those of another
    method's run of the same seed."""
    for r in records:
        if r["kind"] == "run" and r["seed"] == new["seed"] and r["pairing"] != new["pairing"]:
            what = [k for k in ("init", "order") if r["pairing"][k] != new["pairing"][k]]
            raise PairingError(
                f"compare: {new['key']} and {r['key']} (seed {new['seed']}) differ in their "
                f"{' and '.join(what)} (initial student / first batches): the pair's model or "
                "data module draws from a generator of its own. Build the student and the "
                "data order from the global seed (torch.manual_seed), or give the data "
                "module a seed argument."
            )


def in_subprocess(pair: Pair, spec: dict[str, Any], folder: Path) -> Record:
    """Run one task in a fresh interpreter (``python -m distpro_lightning.compare.worker``)."""
    with tempfile.TemporaryDirectory(prefix="compare-", dir=folder) as tmp:
        spec_path, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        atomic_write_text(spec_path, json.dumps(spec))
        log = Path(tmp) / "log.txt"
        with log.open("w") as fh:
            proc = subprocess.run(
                [sys.executable, "-m", "distpro_lightning.compare.worker", str(spec_path),
                 str(result)], stdout=fh, stderr=subprocess.STDOUT, env=parent_env(),
            )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(
                f"compare: {spec['task']['key']} failed (exit {proc.returncode}); its log ends "
                f"with:\n{log.read_text()[-4000:]}"
            )
        return json.loads(result.read_text())


def remove_stale_workspaces(folder: Path) -> list[Path]:
    """Remove the ``compare-*`` workspaces of worker processes that a killed comparison
    left in ``folder`` (called under the folder's lock: no comparison is running there, and
    its workers stop when it is gone); the paths removed."""
    stale = sorted(folder.glob("compare-*")) if folder.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


class Runner:
    """Runs one comparison: `run` plans, schedules and saves; see the module docs."""

    def __init__(self, pair: Pair, settings: CompareSettings, say: Callable = print) -> None:
        self.pair, self.given, self.say = pair, settings, say
        self.path = Path(settings.results)
        self.folder = self.path.with_suffix("")
        self.payload = load_payload(self.path, settings, pair)
        self.records: list[Record] = self.payload["records"]
        self.settings = self.effective()
        self.cost: dict[str, Any] | None = None
        if pair.trainer.get("callbacks"):
            say(
                "[compare] trainer.callbacks are not used: every method runs with its own "
                "callbacks (a callback that changes training would unpair the runs)."
            )
        if settings.jobs > 1 and pair.source is None:
            raise ValueError(
                "compare: jobs > 1 runs each task in its own process, which rebuilds the pair "
                "from Pair.source; give one (distpro compare --config sets it) or use jobs=1."
            )

    def effective(self) -> CompareSettings:
        """The settings in force: as given, or the file's after a budget cut made when it
        was started (kept as it was; this call's results path, jobs and budget)."""
        if "effective" not in self.payload:
            return self.given
        kept = CompareSettings(**self.payload["effective"])
        given = self.given
        return dataclasses.replace(
            kept, results=given.results, jobs=given.jobs, budget=given.budget
        )

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.payload, indent=1) + "\n")

    def prepare(self) -> None:
        """Measure the step costs, estimate, cut to the budget (first call only; a resumed
        file keeps its cut), save. Nothing is measured when nothing is left to run."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.records and not plan(self.settings, self.records):
            self.say(f"[compare] nothing left to run in {self.path}; the report is written again")
            self.save()
            return
        self.cost = cost = measure(self.pair, self.settings, self.folder)
        if "effective" not in self.payload:
            self.settings, cuts = fit_budget(self.settings, cost, self.records)
            self.payload["effective"] = self.settings.as_dict()
            self.payload["cuts"] = cuts
            if cuts:
                self.say(f"[compare] over budget: cut {', '.join(cuts)} (in the report too)")
        elif self.payload.get("cuts"):
            cuts = ", ".join(self.payload["cuts"])
            self.say(f"[compare] resumed with the cut made at its start: {cuts}")
        found = estimate(self.settings, cost, self.records)
        self.payload["estimate"] = {"text": found.text(), "step_s": cost["step_s"]}
        self.payload["estimate"]["run_steps"] = cost["run_steps"]
        starts = (
            f" With jobs={self.settings.jobs}, each task also starts a fresh Python process "
            "(seconds, not in the estimate): for tiny runs jobs=1 is faster."
            if self.settings.jobs > 1
            else ""
        )
        self.say(f"[compare] estimate: {found.text()}{starts}")
        self.save()

    def run_one(self, task: Task) -> Record:
        point = resolve(self.settings, self.records, task) if task.kind == "run" else {}
        if self.settings.jobs == 1:
            return execute(self.pair, self.settings, task, point, self.folder)
        spec = {"source": list(self.pair.source or ()), "settings": self.settings.as_dict()}
        spec |= {"task": {**vars(task), "key": task.key}, "point": point}
        spec["folder"] = str(self.folder)
        return in_subprocess(self.pair, spec, self.folder)

    def finish(self, record: Record) -> None:
        if record["kind"] == "run":
            check_pairing(self.records, record)
        record["call"] = len(self.payload["history"]) - 1
        self.records.append(record)
        self.save()
        left = plan(self.settings, self.records)
        shown = f"val {100 * record['val_top1']:.2f} %" if "val_top1" in record else "done"
        eta = estimate(self.settings, self.cost, self.records).left_s if self.cost else 0.0
        self.say(
            f"[compare] {len(self.records)} done, {len(left)} planned, ~{duration(eta)} left: "
            f"{record['key']} {shown} ({record['wall_s']:.1f} s)"
        )

    def run_tasks(self) -> None:
        """Every task left, ``jobs`` at a time (`schedule`: a failed task stops new ones,
        the running ones finish and are recorded, then its error is raised); finishing a
        task plans again (a widened grid, the runs of a final choice)."""
        schedule(
            plan(self.settings, self.records),
            self.settings.jobs,
            self.run_one,
            lambda task, record: self.finish(record),
            more=lambda: plan(self.settings, self.records),
        )

    def run(self, command: str = "") -> dict[str, Any]:
        """Run every task left, then write the report; the payload. The results file's
        folder is locked meanwhile: a second comparison on the same file waits for this
        one (and then resumes what it left), so no run is done twice."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.path.parent, on_wait=self.say_waiting):
            self.payload = load_payload(self.path, self.given, self.pair)  # as it is now
            self.records, self.settings = self.payload["records"], self.effective()
            self.payload["history"].append({"command": command, "started": time.ctime()})
            if self.path.is_file():  # a version-1 file's processes, now that it resumes
                adopt_processes(self.payload, self.folder)
                self.save()  # the renamed processes and the upgraded records, together
            remove_stale_workspaces(self.folder)
            with lightning_info_off():
                self.prepare()
                self.run_tasks()
                write_report(self.payload, self.settings, self.path, self.pair)
        return self.payload

    def say_waiting(self) -> None:
        self.say(
            f"[compare] another comparison is running on {self.path}: waiting for it to "
            "finish, then this one resumes what it left"
        )


def compare(pair: Pair, settings: CompareSettings, command: str = "") -> dict[str, Any]:
    """Run (or resume) the comparison of ``settings`` on ``pair``; the results payload. The
    report (``.md``) and plot (``.png``) are written beside the results file."""
    return Runner(pair, settings).run(command)
