"""Results files across versions (`distpro_lightning.compare.results_file`): a file of
version 1 (one search per recipe) is upgraded, its runs kept and its process renamed; a
newer version is refused."""

from __future__ import annotations

import json

import pytest

from distpro_lightning.compare.plan import plan
from distpro_lightning.compare.report import render, settings_of
from distpro_lightning.compare.results_file import VERSION, adopt_processes, upgrade
from distpro_lightning.compare.settings import CompareSettings


def version_1(tmp_path):
    settings = CompareSettings(methods=["student", "distpro"], seeds=[0, 1], grid_seeds=[0],
                               search_seeds=[7]).as_dict()  # fmt: skip
    del settings["search_seeds"]
    settings["search_seed"] = 7  # how version 1 wrote it
    run = {"kind": "run", "params": {}, "wall_s": 1.0, "val_top1": 0.5}
    records = [
        {"kind": "search", "method": "full", "key": "search:full", "seed": 0, "wall_s": 3.0,
         "process": "process_full.json"},
        *[{**run, "method": "student", "seed": k, "key": f"run:student:{k}:default",
           "top1": 0.5 + k / 10} for k in (0, 1)],
        *[{**run, "method": "distpro", "seed": k, "key": f"run:distpro:{k}:default",
           "top1": 0.7 + k / 10} for k in (0, 1)],
    ]  # fmt: skip
    given = {k: v for k, v in settings.items() if k not in ("results", "jobs", "budget")}
    payload = {"version": 1, "settings": {"compare": given, "pair": {}},
               "effective": dict(settings, results=str(tmp_path / "r.json")), "history": [],
               "records": records}  # fmt: skip
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "process_full.json").write_text("{}")
    (tmp_path / "r.json").write_text(json.dumps(payload))
    return payload


def test_a_version_1_file_is_upgraded_with_every_run_kept(tmp_path):
    payload = upgrade(version_1(tmp_path))
    assert payload["version"] == VERSION == 2
    keys = [r["key"] for r in payload["records"]]
    assert keys == ["search:full:s7", "run:student:0:default", "run:student:1:default",
                    "run:distpro:0:default:s7", "run:distpro:1:default:s7"]  # fmt: skip
    assert payload["records"][0]["process"] == "process_full_s7.json"
    # in memory only: the process keeps its name until a resume is accepted
    assert (tmp_path / "r" / "process_full.json").is_file()
    adopt_processes(payload, tmp_path / "r")
    assert (tmp_path / "r" / "process_full_s7.json").read_text() == "{}"
    assert not (tmp_path / "r" / "process_full.json").exists()
    assert "v1_process" not in payload["records"][0]
    settings = settings_of(payload, tmp_path / "r.json")
    assert settings.search_seeds == (7,)
    assert plan(settings, payload["records"]) == []  # nothing runs again
    assert upgrade(json.loads(json.dumps(payload))) == payload  # a second upgrade: no change


def test_two_different_processes_under_both_names_are_refused(tmp_path):
    payload = upgrade(version_1(tmp_path))
    (tmp_path / "r" / "process_full_s7.json").write_text('{"other": 1}')
    with pytest.raises(ValueError, match="both exist and differ"):
        adopt_processes(payload, tmp_path / "r")
    assert (tmp_path / "r" / "process_full.json").is_file()


def test_compare_report_renders_a_version_1_file_and_leaves_it_as_it_is(tmp_path):
    version_1(tmp_path)
    before = (tmp_path / "r.json").read_text()
    text = render(tmp_path / "r.json")
    assert "| DistPro, full search (the frozen recipe) | – | 2 × 1 search |" in text
    assert (tmp_path / "r.json").read_text() == before
    assert (tmp_path / "r" / "process_full.json").is_file()


def test_a_file_of_a_newer_version_is_refused():
    with pytest.raises(ValueError, match="upgrade distpro-lightning"):
        upgrade({"version": VERSION + 1, "records": []})


def test_a_comparison_resumes_a_version_1_file_and_renames_its_process_only_then(tmp_path):
    from distpro_lightning.compare.pair import Pair
    from distpro_lightning.compare.runner import Runner

    version_1(tmp_path)
    before = (tmp_path / "r.json").read_text()
    pair = Pair(model=lambda: None, data=lambda seed, search: None)
    settings = CompareSettings(results=str(tmp_path / "r.json"), methods=["student", "distpro"],
                               seeds=[0, 1], grid_seeds=[0], search_seeds=[7])  # fmt: skip
    # under the new default of three searches it is refused, naming the values, and
    # nothing on disk changes
    with pytest.raises(ValueError, match=r"search_seeds: \[7\] there, \[7, 8, 9\] now"):
        Runner(pair, CompareSettings(**{**settings.as_dict(), "search_seeds": [7, 8, 9]}))
    assert (tmp_path / "r.json").read_text() == before
    assert (tmp_path / "r" / "process_full.json").is_file()
    runner = Runner(pair, settings, say=lambda text: None)
    assert [r["key"] for r in runner.records][0] == "search:full:s7"
    runner.prepare = lambda: None  # nothing left to run: no warm-up to measure
    runner.run("resume")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["version"] == 2 and saved["records"][0]["process"] == "process_full_s7.json"
    assert "v1_process" not in saved["records"][0]
    assert (tmp_path / "r" / "process_full_s7.json").is_file()
    assert len(saved["records"]) == 5 and len(saved["history"]) == 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda text: text[: len(text) // 2], "is not valid JSON (truncated or edited?)"),
        (lambda text: "[1, 2]", "is not a results file of distpro compare"),
        (lambda text: text.replace('"records": [', '"records": null, "x": ['), "'records' must be a list"),
        (lambda text: text.replace('"seed": 1,', '"seed": "1",', 1), "has seed='1', not int"),
        (lambda text: text.replace('"seed": 1,', "", 1), "has seed=None, not int"),
        (lambda text: text.replace('"top1": 0.5', '"top1": true', 1), "has top1=True, not int/float"),
        (lambda text: text.replace('"kind": "run"', '"kind": "runs"', 1), "has kind='runs', not run or search"),
    ],
)  # fmt: skip
def test_compare_report_names_a_damaged_results_file_without_a_traceback(
    tmp_path, capsys, damage, message
):
    from distpro_lightning.cli.compare import main

    version_1(tmp_path)
    path = tmp_path / "r.json"
    text = json.dumps(json.loads(path.read_text()), separators=(", ", ": "))
    path.write_text(damage(text))
    assert main(["--report", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("distpro compare: error: compare: ") and message in err
    assert str(path) in err
