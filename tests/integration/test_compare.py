"""``distpro compare`` end to end on a user-defined pair (own teacher and student classes,
own data module, tests/own_project.py), at tiny size: the results file, the report, the
pairing, the logger, and a resume after ``kill -9`` that loses no finished run and runs
none twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from distpro_lightning.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def pair_config(tmp_path: Path, **compare) -> Path:
    """A config of the user's own pair: SmallCNN student and teacher, OwnData."""
    config = {
        "model": {
            "class_path": "distpro_lightning.DistProModule",
            "init_args": {
                "student": {"class_path": "own_project.SmallCNN"},
                "teacher": {"class_path": "own_project.SmallCNN", "init_args": {"width": 12}},
                "num_classes": 10,
                "distillation": {
                    "transforms": ["conv_bn"],
                    "response_kd": True,
                    "review_kd": True,
                    "input_shape": [1, 8, 8],
                    "prune_threshold": 0.5,
                },  # fmt: skip
            },
        },
        "data": {"class_path": "own_project.OwnData", "init_args": {"train_size": 48}},
        "trainer": {
            "max_epochs": 1,
            "max_steps": 2,
            "accelerator": "cpu",
            "enable_progress_bar": False,
        },  # fmt: skip
        "compare": {
            "results": str(tmp_path / "cmp" / "results.json"),
            "seeds": [0, 1],
            "grid_seeds": [0, 1],
            "widen_rounds": 0,
            "budget": {"warmup_steps": 2},
            **compare,
        },  # fmt: skip
    }
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", *args])
    return exit_info.value.code


# the user's small CNN in the recommended space: the review head dwarfs it, which every
# DistPro module of the comparison says at fit start (tested in tests/unit/modules)
@pytest.mark.filterwarnings("ignore:The .* pathway heads hold:UserWarning")
# use alpha_T is the final weights replayed on purpose; the replay warns of the KD pathway
@pytest.mark.filterwarnings("ignore:ProcessScheduleCallback.mode='final'. with the:UserWarning")
# the cheap recipe's proxy search of one step updates alpha once, which the search says
@pytest.mark.filterwarnings("ignore:search.schedule.every_n_steps=4 with a fit of:UserWarning")
def test_compare_runs_end_to_end_on_a_users_own_pair_and_pairs_the_seeds(tmp_path, capfd):
    logs = tmp_path / "logs"
    methods = ["student", "hinton_kd", "reviewkd", "equal", "fixed", "alpha_T", "distpro"]
    config = pair_config(
        tmp_path,
        methods=[*methods, "distpro_cheap"],
        search_seeds=[100, 200],
        grids={
            "hinton_kd": [{"w": 1.0, "T": 4.0}, {"w": 2.0, "T": 4.0}],
            "reviewkd": [{"w": 1.0, "warm": 0.0}],
            "equal": [{"w": 1.0}],
            "fixed": [{"w": 1.0, "f": 0.8}],
        },
    )
    logger = {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": str(logs)},
    }
    assert run_cli(["--config", str(config), f"--trainer.logger={json.dumps(logger)}"]) == 0
    printed = capfd.readouterr()
    # its own progress lines, not Lightning's info on each of its dozens of Trainers
    assert "[compare] estimate:" in printed.out and "done," in printed.out
    assert "GPU available" not in printed.out + printed.err
    payload = json.loads((tmp_path / "cmp" / "results.json").read_text())
    runs = [r for r in payload["records"] if r["kind"] == "run"]
    searches = {r["key"]: r for r in payload["records"] if r["kind"] == "search"}
    # Hinton KD's 2 points x 2 grid seeds, 4 other methods once per seed, the 3 replays
    # once per seed and search; two searches of each recipe
    assert len(runs) == 4 + 2 * 4 + 2 * 2 * 3
    assert sorted(searches) == [f"search:{r}:s{x}" for r in ("cheap", "full") for x in (100, 200)]
    assert (tmp_path / "cmp" / "results" / "process_full_s200.json").is_file()
    for r in runs:
        assert 0.0 <= r["val_top1"] <= 1.0 and 0.0 <= r["top1"] <= 1.0 and r["steps"] == 2
    # the cheap recipe's proxy search runs a quarter of the steps (at least one)
    assert searches["search:full:s100"]["steps"] == 2
    assert searches["search:cheap:s200"]["steps"] == 1
    # pairing: per seed every method starts from the same student and sees the same batches
    by_seed = {s: {json.dumps(r["pairing"]) for r in runs if r["seed"] == s} for s in (0, 1)}
    assert len(by_seed[0]) == 1 and len(by_seed[1]) == 1 and by_seed[0] != by_seed[1]
    fields = [json.loads(next(iter(by_seed[s]))) for s in (0, 1)]
    assert fields[0]["init"] != fields[1]["init"] and fields[0]["order"] != fields[1]["order"]
    # each replay uses its recipe's search of its search seed, identified by its fingerprint
    # (two searches of one recipe, on different subsets, are different processes)
    recipe = {"alpha_T": "full", "distpro": "full", "distpro_cheap": "cheap"}
    for r in runs:
        if r["method"] in recipe:
            key = f"search:{recipe[r['method']]}:s{r['search_seed']}"
            assert r["process"] == searches[key]["fingerprint"]
    assert (
        searches["search:full:s100"]["fingerprint"] != searches["search:full:s200"]["fingerprint"]
    )
    text = (tmp_path / "cmp" / "results.md").read_text()
    for label in ("student alone (CE)", "Hinton KD", "ReviewKD", "equal weights", "fixed comb"):
        assert f"| {label}" in text
    assert "| DistPro, full search (the frozen recipe) | – | 2 × 2 searches |" in text
    assert "DistPro method compared: **" in text and "Pairing checked: the 24 runs" in text
    assert "Verdict: " in text and "In progress" not in text  # everything ran
    assert (tmp_path / "cmp" / "results.png").read_bytes()[:4] == b"\x89PNG"
    # --report writes the same report again from the records alone
    (tmp_path / "cmp" / "results.md").unlink()
    assert run_cli(["--report", str(tmp_path / "cmp" / "results.json")]) == 0
    assert (tmp_path / "cmp" / "results.md").read_text() == text
    metrics = next(logs.rglob("metrics.csv")).read_text()
    assert "compare/test_top1/Hinton KD" in metrics
    # a second comparison transfers the first one's searched process (no search there)
    source = tmp_path / "cmp" / "results" / "process_full_s100.json"
    again = ["--config", str(config), "--compare.methods=[student,transfer]", "--compare.grids={}"]
    again += [
        f"--compare.results={tmp_path / 'transfer.json'}",
        f"--compare.transfer_process={source}",
    ]
    assert run_cli(again) == 0
    records = json.loads((tmp_path / "transfer.json").read_text())["records"]
    assert [r["kind"] for r in records] == ["run"] * 4
    assert {r["process"] for r in records if r["method"] == "transfer"} == {
        searches["search:full:s100"]["fingerprint"]
    }


def test_compare_resumes_after_kill_9_without_losing_or_repeating_a_run(tmp_path):
    config = pair_config(
        tmp_path,
        methods=["student", "hinton_kd"],
        grids={"hinton_kd": [{"w": 1.0, "T": 4.0}, {"w": 2.0, "T": 4.0}]},
    )
    results = tmp_path / "cmp" / "results.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests'}"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "distpro_lightning.cli.main", "compare", "--config", str(config)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        killed_with: list[dict] = []
        while time.monotonic() < deadline and proc.poll() is None:
            if results.is_file():
                records = json.loads(results.read_text())["records"]
                if records:
                    proc.send_signal(signal.SIGKILL)
                    killed_with = records
                    break
            time.sleep(0.02)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the comparison ended before it was killed"
    on_disk = json.loads(results.read_text())["records"]
    assert on_disk[: len(killed_with)] == killed_with  # nothing finished was lost
    assert 1 <= len(on_disk) < 6
    assert run_cli(["--config", str(config)]) == 0
    payload = json.loads(results.read_text())
    keys = [r["key"] for r in payload["records"]]
    assert len(keys) == len(set(keys)) == 6  # every run once: 2 student + 2 x 2 Hinton KD
    assert payload["records"][: len(on_disk)] == on_disk  # kept as they were
    assert all(r["call"] == 1 for r in payload["records"][len(on_disk) :])
    assert len(payload["history"]) == 2


def test_a_results_file_resumes_only_under_the_same_settings(tmp_path, capsys):
    config = pair_config(tmp_path, methods=["student"])
    assert run_cli(["--config", str(config)]) == 0
    before = json.loads((tmp_path / "cmp" / "results.json").read_text())["records"]
    assert run_cli(["--config", str(config)]) == 0  # nothing left: no run again
    after = json.loads((tmp_path / "cmp" / "results.json").read_text())["records"]
    assert after == before
    capsys.readouterr()
    assert run_cli(["--config", str(config), "--trainer.max_steps=3"]) == 1
    err = capsys.readouterr().err
    assert "other settings (pair.trainer)" in err and "another compare.results" in err


def test_the_library_api_cuts_seeds_to_a_budget_and_a_resume_keeps_the_cut(tmp_path, monkeypatch):
    from own_project import OwnData, SmallCNN

    from distpro_lightning import DistProModule
    from distpro_lightning.compare import CompareSettings, Pair, compare
    from distpro_lightning.compare import runner as runner_module
    from distpro_lightning.modules.config import DistillationConfig

    # a fixed measurement (a real one is timed; its value would make the cut flaky here)
    cost = {"step_s": {"student": 0.1}, "run_steps": 100}  # 10 s a run
    monkeypatch.setattr(runner_module, "measure", lambda pair, settings, folder: cost)
    space = DistillationConfig(transforms=["conv_bn"], input_shape=[1, 8, 8])
    pair = Pair(
        model=lambda: DistProModule(SmallCNN(), SmallCNN(width=12), distillation=space),
        data=lambda seed, search: OwnData(seed=seed, train_size=32),
        trainer={"max_epochs": 1, "max_steps": 1, "enable_progress_bar": False},
    )
    results = str(tmp_path / "api" / "results.json")
    settings = CompareSettings(
        results=results, methods=["student"], seeds=[0, 1, 2], grid_seeds=[0],
        budget={"wall_s": 25.0},
    )  # fmt: skip
    payload = compare(pair, settings)
    assert payload["cuts"] == ["seed 2"]
    assert sorted(r["seed"] for r in payload["records"]) == [0, 1]
    assert "Cut to the budget: seed 2." in (tmp_path / "api" / "results.md").read_text()
    again = compare(pair, CompareSettings(**{**settings.as_dict(), "budget": {}}))
    assert again["records"] == payload["records"] and again["cuts"] == ["seed 2"]


def test_a_second_comparison_on_the_same_file_waits_and_then_runs_nothing_twice(tmp_path):
    import threading

    from own_project import OwnData, SmallCNN

    from distpro_lightning import DistProModule
    from distpro_lightning.compare import CompareSettings, Pair, Runner
    from distpro_lightning.modules.config import DistillationConfig

    space = DistillationConfig(transforms=["conv_bn"], input_shape=[1, 8, 8])
    pair = Pair(
        model=lambda: DistProModule(SmallCNN(), SmallCNN(width=12), distillation=space),
        data=lambda seed, search: OwnData(seed=seed, train_size=32),
        trainer={"max_epochs": 1, "max_steps": 1, "enable_progress_bar": False},
    )
    settings = CompareSettings(
        results=str(tmp_path / "two" / "results.json"), methods=["student"], seeds=[0, 1],
        grid_seeds=[0], budget={"warmup_steps": 2},
    )  # fmt: skip
    first_inside, second_waits = threading.Event(), threading.Event()
    said: list[str] = []

    def first_says(text: str) -> None:  # the first comparison pauses inside its lock ...
        if "estimate" in text:
            first_inside.set()
            assert second_waits.wait(60)  # ... until the second one waits for it

    def second_says(text: str) -> None:
        said.append(text)
        if "another comparison is running" in text:
            second_waits.set()

    first = threading.Thread(target=Runner(pair, settings, say=first_says).run)
    first.start()
    assert first_inside.wait(120)
    second = Runner(pair, settings, say=second_says)
    second.run()  # waits for the first, then finds nothing left to run
    first.join(120)
    payload = json.loads((tmp_path / "two" / "results.json").read_text())
    keys = [r["key"] for r in payload["records"]]
    assert sorted(keys) == ["run:student:0:default", "run:student:1:default"]
    assert len(payload["history"]) == 2 and any("nothing left to run" in s for s in said)


def test_a_data_module_without_validation_is_refused_before_any_run(tmp_path, capsys):
    config = pair_config(tmp_path, methods=["student"])
    data = {"class_path": "distpro_lightning.data.DigitsDataModule", "init_args": {"subset": 64}}
    assert run_cli(["--config", str(config), f"--data={json.dumps(data)}"]) == 1
    err = capsys.readouterr().err
    assert "every grid point is chosen on validation" in err and "val_fraction" in err
    assert not (tmp_path / "cmp" / "results.json").exists()  # nothing ran, nothing recorded


def test_compare_help_names_the_report_command_in_plain_text(capsys):
    assert run_cli(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the help wraps to the terminal's width
    assert "`distpro compare --report RESULTS.json`" in out and "``" not in out.split("options:")[0]


def test_a_results_file_resumes_only_with_the_same_teacher_file_not_just_its_path(tmp_path):
    from distpro_lightning.cli.compare import pair_from_config

    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"first teacher")
    config = {
        "model": {"class_path": "distpro_lightning.DistProModule",
                  "init_args": {"student": "resnet8", "teacher": str(teacher),
                                "teacher_model": "resnet14"}},
        "data": {"class_path": "own_project.OwnData"},
        "trainer": {"max_epochs": 1},
    }  # fmt: skip
    first = pair_from_config(config).description
    assert set(first["files"]) == {"teacher"} and len(first["files"]["teacher"]) == 64
    teacher.write_bytes(b"a retrained teacher at the same path")
    assert pair_from_config(config).description["files"] != first["files"]
