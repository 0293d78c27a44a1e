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

from collections.abc import Mapping
from typing import Any

# the rule is the library's (`distpro_lightning.compare.plan`: ``distpro compare`` chooses
# and widens by the very same functions); this module holds the project's grids and the
# adapters from its records (which name their pair) to the rule
from distpro_lightning.compare import plan as rule
from distpro_lightning.compare.plan import (  # noqa: F401
    CHOSEN,
    best_point,
    params_key,
    parse_params,
)

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


def grid_scores(
    records: list[dict[str, Any]], pair: str, method: str, seeds: list[int]
) -> dict[str, dict[int, float]]:
    """Validation top-1 of ``method``'s runs on ``pair`` and ``seeds``, by point and seed."""
    return rule.grid_scores([r for r in records if r.get("pair") == pair], method, seeds)


def done_points(
    grid: list[dict[str, float]], scores: dict[str, dict[int, float]], seeds: list[int]
) -> list[dict[str, float]]:
    """The points of ``grid`` done on every seed in ``seeds``."""
    return [p for p in grid if all(s in scores.get(params_key(p), {}) for s in seeds)]


def grid_set(settings: Mapping[str, Any]) -> Mapping[str, list[dict[str, float]]]:
    """The grids of a results file: its ``grids`` setting (files before issue 34 have none:
    the issue-20 grids)."""
    return GRID_SETS[settings.get("grids") or "issue20"]


def edges(
    grid: list[dict[str, float]], point: dict[str, float], widen: tuple[str, ...] | None = None
) -> dict[str, float]:
    """The parameters at which ``point`` sits on an edge of ``grid`` -> the value one factor
    of 2 beyond it (only parameters the grid varies; among them those in ``widen``, default
    all)."""
    return rule.edges(grid, point, tuple(point) if widen is None else widen)


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
    widen = WIDEN.get(method, tuple(grid[0]))
    scores = grid_scores(records, pair, method, seeds)
    return rule.widened(grid, scores, seeds, widen, WIDEN_ROUNDS)


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
