"""The issue-34 evidence through ``distpro compare`` (benchmarks/evidence_compare.py): the
committed per-pair results files hold the evidence run's own records, ``distpro compare
--report`` reproduces their committed reports byte for byte, and compare's rule picks the
very grid points and runs the evidence report shows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import converged_grids, converged_report, evidence_compare
from distpro_lightning.cli.compare import main as compare_cli
from distpro_lightning.compare.plan import choice_runs, params_key
from distpro_lightning.compare.report import settings_of
from distpro_lightning.compare.settings import DEFAULT_GRIDS

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
EVIDENCE = RESULTS / "reviewer_fmnist.json"
FILES = sorted((RESULTS / "reviewer_fmnist").glob("compare_*.json"))


def test_every_pair_of_the_evidence_has_its_compare_file():
    evidence = json.loads(EVIDENCE.read_text())
    pairs = {r["pair"] for r in evidence["records"] if r["kind"] == "run"}  # not a teacher
    assert {p.stem.removeprefix("compare_") for p in FILES} == pairs


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_a_compare_file_holds_the_evidence_runs_own_records(path):
    evidence = json.loads(EVIDENCE.read_text())
    pair = path.stem.removeprefix("compare_")
    exported = evidence_compare.export_pair(
        evidence, pair, "benchmarks/results/reviewer_fmnist.json"
    )
    exported["effective"]["results"] = path.name
    assert json.loads(path.read_text()) == json.loads(json.dumps(exported))
    # every record keeps its scores, and names the evidence record it came from
    by_key = {r["key"]: r for r in evidence["records"]}
    for r in exported["records"]:
        if r["kind"] == "run":
            source = by_key[r["evidence_key"]]
            assert (r["top1"], r["val_top1"], r["seed"]) == (
                source["top1"], source["val_top1"], source["seed"]
            )  # fmt: skip


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_distpro_compare_report_reproduces_the_committed_report(path, tmp_path, capsys):
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    assert compare_cli(["--report", str(copy)]) == 0
    assert copy.with_suffix(".md").read_text() == path.with_suffix(".md").read_text()
    assert copy.with_suffix(".png").read_bytes() == path.with_suffix(".png").read_bytes()
    assert "# Is DistPro worth it on this pair?" in capsys.readouterr().out


def test_the_evidence_grids_map_into_compares_units_pair_by_pair():
    from benchmarks.converged import parse_args
    from benchmarks.converged_methods import PAIRS, REVIEW_SPACE, distpro_module
    from distpro_lightning.models import create

    epochs = json.loads(EVIDENCE.read_text())["settings"]["epochs"]
    units = {}
    for pair in PAIRS:
        teacher = create(PAIRS[pair][0], num_classes=10, in_channels=1)
        module = distpro_module(parse_args(["--rows", "issue34"]), pair, teacher, **REVIEW_SPACE)
        units[pair] = evidence_compare.weight_unit(pair)
        assert units[pair] == len(module.pathway_names)  # kd_weight 1 = one per pathway
    assert units == {"resnet20-resnet8": 11, "wrn_16_2-mobilenet_v2": 14,
                     "wrn_40_2-shufflenet_v1": 11}  # fmt: skip
    for pair, unit in units.items():
        fixed = converged_grids.GRIDS_ISSUE34["fixed_review"]
        mapped = [
            evidence_compare.to_compare_params("fixed_review", p, epochs, pair) for p in fixed
        ]
        assert [m["w"] * unit for m in mapped] == pytest.approx([p["w"] for p in fixed])
        if unit == 11:  # total 11 = kd_weight 1 there: compare's default grid
            assert [params_key(p) for p in mapped] == [
                params_key(p) for p in DEFAULT_GRIDS["fixed"]
            ]
    review = [
        evidence_compare.to_compare_params("reviewkd", p, epochs, "resnet20-resnet8")
        for p in converged_grids.GRIDS_ISSUE34["reviewkd"]
    ]
    assert [params_key(p) for p in review] == [params_key(p) for p in DEFAULT_GRIDS["reviewkd"]]
    assert converged_grids.GRIDS_ISSUE34["hinton_kd"] == DEFAULT_GRIDS["hinton_kd"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_compares_rule_picks_the_runs_the_evidence_report_shows(path):
    evidence = json.loads(EVIDENCE.read_text())
    pair = path.stem.removeprefix("compare_")
    payload = json.loads(path.read_text())
    settings = settings_of(payload, path)
    theirs = converged_report.chosen_runs(
        evidence["records"], pair, (0, 1), converged_grids.GRIDS_ISSUE34
    )
    compared = 0
    for method, (name, search) in evidence_compare.METHOD_MAP.items():
        if method not in theirs or name == "distpro":  # the recipe is pooled over searches
            continue
        grid = converged_grids.GRIDS_ISSUE34.get(method, [{}])
        if (
            len(grid) > 1
            and converged_grids.current_choice(
                evidence["records"], pair, method, [0, 1], converged_grids.GRIDS_ISSUE34
            )
            is None
        ):  # no point done on both grid seeds yet: neither rule has chosen
            continue
        ours = choice_runs(settings, payload["records"], name, provisional=True)
        if search is not None and len(theirs[method]) < 2:  # a running pair: compare
            assert ours == {}, method  # pools a replay on a complete table of 2+ seeds only
            continue
        if search is not None:  # a replay of one search: pooled over that one
            assert {r["searches"] for r in ours.values()} == {1}
        assert sorted(ours) == sorted(theirs[method]), method
        for seed, run in ours.items():
            assert run["top1"] == theirs[method][seed]["top1"], (method, seed)
        compared += 1
    students = {r["seed"] for r in evidence["records"] if r.get("pair") == pair
                and r.get("method") == "student"}  # fmt: skip
    assert compared >= (5 if len(students) >= 5 else 1)  # a running pair: what is chosen


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--report"], "takes one results file"),
        (["--report", "a.json", "b.json"], "takes one results file"),
        (["--report", "nowhere/results.json"], "no results file at"),
    ],
)
def test_compare_report_refuses_what_it_cannot_render(argv, message, capsys):
    assert compare_cli(argv) == 1
    assert message in capsys.readouterr().err


def test_compare_report_refuses_a_file_that_is_not_a_comparison(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"history": []}))
    assert compare_cli(["--report", str(other)]) == 1
    assert "not a results file of distpro compare" in capsys.readouterr().err


def test_a_pair_with_only_its_teacher_so_far_gets_no_compare_file(tmp_path):
    evidence = json.loads(EVIDENCE.read_text())
    pair3 = "wrn_40_2-shufflenet_v1"
    evidence["records"] = [r for r in evidence["records"] if r.get("pair") != pair3]
    teacher = {"kind": "teacher", "key": "teacher:wrn_40_2", "pair": pair3,
               "wall_s": 1.0, "top1": 0.9}  # fmt: skip
    evidence["records"].append(teacher)
    (tmp_path / "reviewer_fmnist.json").write_text(json.dumps(evidence))
    written = evidence_compare.export("reviewer_fmnist", tmp_path)
    assert [p.stem for p in written] == [p.stem for p in FILES if pair3 not in p.stem]
