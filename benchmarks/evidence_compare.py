"""The issue-34 evidence through ``distpro compare``: each pair's records of the evidence
run, written as a ``distpro compare`` results file, whose report ``distpro compare
--report`` renders. One code path: the grid choice (`compare.plan`), the pooling of the
recipe's three searches, the paired intervals and Holm (`compare.report`) are the very
functions a user's comparison runs.

    python -m benchmarks.evidence_compare --name reviewer_fmnist

writes ``benchmarks/results/<name>/compare_<pair>.{json,md,png}`` from
``benchmarks/results/<name>.json``. What is specific to the evidence is only the mapping
(`METHOD_MAP`, `to_compare_params`): the evidence's method names, its three searches of the
frozen recipe (search draws 100, 2100, 3100), its units (the fixed combination's total
weight, in compare's ``kd_weight`` per pair: `weight_unit`; ReviewKD's warm-up in epochs) and its settings (five seeds, grids on seeds 0-1,
widened twice; the frozen recipe named in advance as the reference)."""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

from benchmarks.converged_grids import CHOSEN, GRIDS_ISSUE34
from distpro_lightning.compare.plan import params_key, search_key
from distpro_lightning.compare.report import render
from distpro_lightning.compare.results_file import VERSION
from distpro_lightning.compare.settings import CompareSettings
from distpro_lightning.files import atomic_write_text

#: evidence method -> (compare method, the search seed it replays or ``None``)
METHOD_MAP: dict[str, tuple[str, int | None]] = {
    "student": ("student", None),
    "hinton_kd": ("hinton_kd", None),
    "reviewkd": ("reviewkd", None),
    "uniform_review": ("equal", None),  # the recommended space at uniform weights
    "fixed_review": ("fixed", None),
    "alpha_T_review": ("alpha_T", 100),
    "distpro_review": ("distpro", 100),
    "distpro_review_s2": ("distpro", 2100),
    "distpro_review_s3": ("distpro", 3100),
    "distpro_cheap_review": ("distpro_cheap", 100),
    "transfer_review": ("transfer", None),
}
#: evidence search variant -> (compare recipe, search seed)
SEARCH_MAP = {
    "search_review": ("full", 100),
    "search_review_s2": ("full", 2100),
    "search_review_s3": ("full", 3100),
    "search_cheap_review": ("cheap", 100),
}
METHODS = ["student", "hinton_kd", "reviewkd", "equal", "fixed", "alpha_T", "distpro"]
METHODS += ["distpro_cheap", "transfer"]


@functools.cache
def weight_unit(pair: str) -> float:
    """The total weight of ``kd_weight=1`` in ``pair``'s recommended space: its number of
    pathways (``scale_by_num_pathways``; 11 on most pairs, 14 on wrn_16_2 -> mobilenet_v2,
    whose taps give more feature pathways). The evidence's fixed combination gives its
    total weight; ``distpro compare``'s ``w`` is the ``kd_weight``: the evidence's
    ``fixed_combination`` divides by this very number (a probe of the same module)."""
    from benchmarks.converged import parse_args
    from benchmarks.converged_methods import PAIRS, REVIEW_SPACE, distpro_module
    from distpro_lightning.models import create

    teacher = create(PAIRS[pair][0], num_classes=10, in_channels=1)
    probe = distpro_module(parse_args(["--rows", "issue34"]), pair, teacher, **REVIEW_SPACE)
    return float(probe.weight_scale)


def to_compare_params(
    method: str, params: dict[str, float], epochs: int, pair: str
) -> dict[str, float]:
    """An evidence grid point in ``distpro compare``'s units and key order."""
    if method == "fixed_review":
        return {"w": params["w"] / weight_unit(pair), "f": params["f"]}
    if method == "reviewkd":
        return {"w": params["w"], "warm": params["warm"] / epochs}
    if method == "hinton_kd":
        return {"w": params["w"], "T": params["T"]}
    if method == "uniform_review":  # the space at weight 1 per pathway: compare's equal, w=1
        return {"w": 1.0}
    return {}


def settings_for(pair: str, evidence: dict[str, Any], methods: list[str]) -> CompareSettings:
    """The comparison the evidence run is: its seeds and grid seeds, the issue-34 grids in
    compare's units (the space at uniform weights untuned: one point), the three searches,
    the frozen recipe as the reference."""
    epochs = evidence["settings"]["epochs"]
    grids = {
        name: [to_compare_params(ours, p, epochs, pair) for p in GRIDS_ISSUE34[ours]]
        for ours, name in (("hinton_kd", "hinton_kd"), ("reviewkd", "reviewkd"))
        + (("fixed_review", "fixed"),)
        if name in methods
    }
    if "equal" in methods:
        grids["equal"] = [{"w": 1.0}]
    seeds = sorted({r["seed"] for r in evidence["records"] if r["kind"] == "run"})
    transfer = "benchmarks/results/reviewer_fmnist/process_resnet20-resnet8_shared_review.json"
    return CompareSettings(
        results=f"compare_{pair}.json",
        methods=methods,
        seeds=seeds or [0, 1, 2, 3, 4],
        grid_seeds=evidence["settings"]["grid_seeds"],
        grids=grids,
        search_seeds=[100, 2100, 3100],
        transfer_process=transfer if "transfer" in methods else None,
        recommended="distpro" if "distpro" in methods else "auto",  # frozen in advance
    )


def to_record(r: dict[str, Any], epochs: int) -> dict[str, Any]:
    """An evidence record as a compare record (its scores, wall time and steps as run)."""
    if r["kind"] == "search":
        recipe, seed = SEARCH_MAP[r["method"]]
        out = {"kind": "search", "method": recipe, "key": search_key(recipe, seed)}
        return out | {"seed": 0, "search_seed": seed, "wall_s": r["wall_s"], "steps": r["steps"]}
    method, search = METHOD_MAP[r["method"]]
    params = to_compare_params(r["method"], r["params"], epochs, r["pair"])
    chosen = r["key"].endswith(f":{CHOSEN}")
    key = f"run:{method}:{r['seed']}:{CHOSEN if chosen else params_key(params)}"
    key += "" if search is None else f":s{search}"
    out = {"kind": "run", "method": method, "key": key, "seed": r["seed"], "params": params}
    out |= {"top1": r["top1"], "val_top1": r["val_top1"], "wall_s": r["wall_s"]}
    out |= {"steps": r.get("steps"), "evidence_key": r["key"]}
    return out if search is None else out | {"search_seed": search}


def export_pair(evidence: dict[str, Any], pair: str, source: str) -> dict[str, Any]:
    """``pair``'s records of the evidence file as a ``distpro compare`` results payload."""
    epochs = evidence["settings"]["epochs"]
    mine = [
        r for r in evidence["records"]
        if r.get("pair") == pair and (r.get("method") in METHOD_MAP or r.get("method") in SEARCH_MAP)
    ]  # fmt: skip
    records = [to_record(r, epochs) for r in mine]
    methods = [m for m in METHODS if any(r.get("method") == m for r in records)]
    settings = settings_for(pair, evidence, methods)
    effective = settings.as_dict()
    command = f"python -m benchmarks.evidence_compare (the records of {source}, pair {pair})"
    return {
        "version": VERSION,
        "settings": {"compare": effective, "pair": {"evidence": source, "pair": pair}},
        "effective": effective,
        "history": [{"command": command, "started": "-"}],
        "notes": [
            "the evidence run's records. Its pairing is by construction (one initial student "
            "and one batch order per seed, docs/quality.md). Its wall times are one-thread "
            "task times on a 2-core machine shared with other work, so the cost column is "
            "rough; the measured costs are benchmarks/results/recipe_cost*.json "
            "(docs/cost.md).",
            "the evidence's rows replay the second and third searches with the frozen "
            "recipe only: compare's plan counts use alpha_T's and the cheap recipe's runs of "
            "them as planned, which the evidence run never makes.",
        ],
        "records": records,
    }


def export(name: str, out: Path) -> list[Path]:
    """Every pair's results file of ``out/<name>.json``, written and rendered; the paths."""
    source = out / f"{name}.json"
    evidence = json.loads(source.read_text())
    pairs = sorted({r["pair"] for r in evidence["records"] if r["kind"] == "run"})
    written = []
    for pair in pairs:
        path = out / name / f"compare_{pair}.json"
        payload = export_pair(evidence, pair, f"benchmarks/results/{name}.json")
        payload["effective"]["results"] = path.name
        atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
        render(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="reviewer_fmnist")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    for path in export(args.name, Path(args.out)):
        print(f"[evidence_compare] {path} and its .md/.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
