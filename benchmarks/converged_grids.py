"""The baselines' tuning in the converged protocol: each baseline's grid, run on the grid
seeds and chosen on validation (never the test set), widened beyond any edge its choice sits
on, and the chosen point then run on the other seeds.

Widening: when every point of a grid is done on the grid seeds and the best one (mean
validation top-1) holds the smallest or largest value the grid has of a parameter, the grid
gains the points one factor of 2 beyond that edge (the best point with that parameter halved
or doubled; with two parameters on an edge, also the corner), up to `WIDEN_ROUNDS` times. A
choice still on an edge after that is reported as such (`edges`). Runs of the chosen point
made before a widening moved the choice are superseded (`stale_chosen`) and run again."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

# the grid-point keys are the library's (``w=1,T=4``; ``default``), one definition
from distpro_lightning.compare.plan import params_key, parse_params  # noqa: F401

# Each baseline's own small grid, fixed before any result; widened by the rule above.
GRIDS: dict[str, list[dict[str, float]]] = {
    "hinton_kd": [{"w": w, "T": t} for w in (0.5, 1.0, 2.0) for t in (2.0, 4.0)],
    "fitnet": [{"w": w} for w in (0.5, 2.0, 8.0)],
    "reviewkd": [{"w": w} for w in (0.5, 1.0, 4.0)],
    "equal": [{"w": w} for w in (0.5, 1.0, 2.0)],
}
# Issue 34's grids (frozen with its rows, before any of their runs): ReviewKD also over its
# warm-up (0, or the paper's 20 of 240 epochs scaled to the 30-epoch run: 2.5 epochs), and
# the fixed combination of the recipe's own space: the total distillation weight ``w``
# (centred on 11, the uniform control's total: 11 pathways at weight 1) x the share ``f`` of
# it on the 9 feature pathways (0.8 ~ the uniform control's 9/11), the rest split equally
# between the KD and the ReviewKD pathway.
GRIDS_ISSUE34: dict[str, list[dict[str, float]]] = {
    "hinton_kd": GRIDS["hinton_kd"],
    "reviewkd": [{"w": w, "warm": e} for w in (0.5, 1.0, 4.0) for e in (0.0, 2.5)],
    "equal": GRIDS["equal"],
    "fixed_review": [{"w": w, "f": f} for w in (5.5, 11.0, 22.0) for f in (0.2, 0.5, 0.8)],
}
GRID_SETS = {"issue20": GRIDS, "issue34": GRIDS_ISSUE34}
# the parameters a grid widens beyond an edge (default: all); a share and a warm-up are not
# widened (a share is bounded by 1; the warm-up grid is the paper's value and none)
WIDEN = {"reviewkd": ("w",), "fixed_review": ("w",)}
WIDEN_ROUNDS = 2  # how often a grid may widen beyond an edge its choice sits on
CHOSEN = "chosen"  # the params key of a run at the grid point chosen on the grid seeds


def grid_scores(
    records: list[dict[str, Any]], pair: str, method: str, seeds: list[int]
) -> dict[str, dict[int, float]]:
    """Validation top-1 of ``method``'s runs on ``seeds``, by grid point and seed."""
    scores: dict[str, dict[int, float]] = {}
    for r in records:
        if r.get("pair") == pair and r.get("method") == method and r.get("seed") in seeds:
            scores.setdefault(params_key(r["params"]), {})[r["seed"]] = r["val_top1"]
    return scores


def done_points(
    grid: list[dict[str, float]], scores: dict[str, dict[int, float]], seeds: list[int]
) -> list[dict[str, float]]:
    """The points of ``grid`` done on every seed in ``seeds``."""
    return [p for p in grid if all(s in scores.get(params_key(p), {}) for s in seeds)]


def best_point(
    grid: list[dict[str, float]], scores: dict[str, dict[int, float]], seeds: list[int]
) -> dict[str, float] | None:
    """The point of ``grid`` with the best mean validation top-1 over ``seeds`` (a tie goes
    to the point earlier in the grid: the original grid before its widenings), or ``None``
    while any of its points is not done on every seed."""
    if not grid or len(done_points(grid, scores, seeds)) < len(grid):
        return None
    means = [sum(scores[params_key(p)][s] for s in seeds) / len(seeds) for p in grid]
    return grid[means.index(max(means))]


def grid_set(settings: Mapping[str, Any]) -> Mapping[str, list[dict[str, float]]]:
    """The grids of a results file: its ``grids`` setting (files before issue 34 have none:
    the issue-20 grids)."""
    return GRID_SETS[settings.get("grids") or "issue20"]


def edges(
    grid: list[dict[str, float]], point: dict[str, float], widen: tuple[str, ...] | None = None
) -> dict[str, float]:
    """The parameters at which ``point`` sits on an edge of ``grid`` -> the value one factor
    of 2 beyond it (only parameters the grid varies, and among them those in ``widen``)."""
    out = {}
    for name, value in point.items():
        if widen is not None and name not in widen:
            continue
        values = sorted({p[name] for p in grid})
        if len(values) > 1 and value == values[-1]:
            out[name] = value * 2
        elif len(values) > 1 and value == values[0]:
            out[name] = value / 2
    return out


def final_grid(
    method: str,
    records: list[dict[str, Any]],
    pair: str,
    seeds: list[int],
    grids: Mapping[str, list[dict[str, float]]] = GRIDS,
) -> tuple[list[dict[str, float]], bool]:
    """``method``'s grid on ``pair`` as far as the finished runs widen it, and whether it is
    final (every point done and the choice off the edges, or `WIDEN_ROUNDS` used)."""
    grid = list(grids.get(method, [{}]))
    if len(grid) == 1:
        return grid, True
    scores = grid_scores(records, pair, method, seeds)
    for _ in range(WIDEN_ROUNDS):
        best = best_point(grid, scores, seeds)
        if best is None:
            return grid, False
        beyond = edges(grid, best, WIDEN.get(method))
        if not beyond:
            return grid, True
        options = [(best[k], beyond[k]) if k in beyond else (best[k],) for k in best]
        known = {params_key(p) for p in grid}
        for values in itertools.product(*options):
            point = dict(zip(best, values))
            if params_key(point) not in known:
                grid.append(point)
    return grid, best_point(grid, scores, seeds) is not None


def choose_point(
    records: list[dict[str, Any]],
    pair: str,
    method: str,
    seeds: list[int],
    grids: Mapping[str, list[dict[str, float]]] = GRIDS,
) -> str:
    """The params key of the point of ``method``'s final grid with the best mean validation
    top-1 over ``seeds``."""
    grid, final = final_grid(method, records, pair, seeds, grids)
    best = best_point(grid, grid_scores(records, pair, method, seeds), seeds)
    if not final or best is None:
        raise RuntimeError(f"no complete grid of {method} on seeds {seeds} for {pair}")
    return params_key(best)


def current_choice(
    records: list[dict[str, Any]],
    pair: str,
    method: str,
    seeds: list[int],
    grids: Mapping[str, list[dict[str, float]]] = GRIDS,
) -> dict[str, float] | None:
    """The best point among those of ``method``'s grid done on every seed in ``seeds`` (the
    final choice once the grid is final), ``None`` before any is done; what the report
    shows, by the same rule as `choose_point`."""
    grid, _ = final_grid(method, records, pair, seeds, grids)
    scores = grid_scores(records, pair, method, seeds)
    return best_point(done_points(grid, scores, seeds), scores, seeds)


def stale_chosen(
    records: list[dict[str, Any]],
    seeds: list[int],
    grids: Mapping[str, list[dict[str, float]]] = GRIDS,
) -> list[dict[str, Any]]:
    """The runs of a chosen point (key ``...:chosen``) whose grid is final and now chooses
    another point: a widening moved the choice after they ran."""
    stale = []
    for r in records:
        if r.get("kind") != "run" or not r["key"].endswith(f":{CHOSEN}"):
            continue
        grid, final = final_grid(r["method"], records, r["pair"], seeds, grids)
        if final and params_key(r["params"]) != choose_point(
            records, r["pair"], r["method"], seeds, grids
        ):
            stale.append(r)
    return stale
