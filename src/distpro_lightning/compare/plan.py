"""The plan of a comparison: its tasks (the shared searches, then every method's runs on
every paired seed), and the one rule by which a grid point is chosen.

The rule, the same for every method: a grid runs on the grid seeds; the point with the
best mean *validation* top-1 over them is chosen (ties go to the point earlier in the
grid); the test set is never read. When that point sits on an edge of the grid in a
widened parameter, the grid gains the points one factor of 2 beyond it (with two such
parameters, the corner too), at most ``widen_rounds`` times; once the grid is final, its
choice runs on the other seeds. Finishing a task can make new ones (a widened grid, the
runs of a final choice), so the runner plans again after every finished task."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from distpro_lightning.compare.settings import REPLAYS, WIDEN, CompareSettings, Grid

CHOSEN = "chosen"  # the params field of a run at the point chosen on the grid seeds
Record = dict[str, Any]


@dataclass(frozen=True)
class Task:
    """A shared search (``kind="search"``, ``method`` = recipe, ``search`` = its seed) or
    one run of a method on a seed at a grid point (``params``: its key, or `CHOSEN`;
    ``search``: the search it replays, if any), with the keys it waits for."""

    kind: str
    method: str
    seed: int = 0
    params: str = ""
    deps: tuple[str, ...] = ()
    search: int | None = None

    @property
    def priority(self) -> float:
        """Searches before runs (their replays wait for them); runs in the plan's order."""
        return 1.0 if self.kind == "search" else 0.0

    @property
    def key(self) -> str:
        if self.kind == "search":
            return search_key(self.method, self.search)
        tail = "" if self.search is None else f":s{self.search}"
        return f"run:{self.method}:{self.seed}:{self.params}{tail}"


def search_key(recipe: str, search_seed: int | None) -> str:
    """``search:full:s100``: the task key of ``recipe``'s search of ``search_seed``."""
    return f"search:{recipe}:s{search_seed}"


def params_key(point: dict[str, float]) -> str:
    """``w=1,T=4`` (the parameters in the grid's order); ``default`` for no parameters."""
    return ",".join(f"{k}={v:g}" for k, v in point.items()) or "default"


def parse_params(key: str) -> dict[str, float]:
    if key == "default":
        return {}
    return {k: float(v) for k, v in (kv.split("=") for kv in key.split(","))}


def grid_scores(records: list[Record], method: str, seeds: Sequence[int]) -> dict[str, dict]:
    """Validation top-1 of ``method``'s runs on ``seeds``: params key -> seed -> score."""
    scores: dict[str, dict[int, float]] = {}
    for r in records:
        if r["kind"] == "run" and r["method"] == method and r["seed"] in seeds:
            scores.setdefault(params_key(r["params"]), {})[r["seed"]] = r["val_top1"]
    return scores


def best_point(grid: Grid, scores: dict[str, dict], seeds: Sequence[int]) -> dict | None:
    """The point with the best mean validation top-1 over ``seeds`` (first on a tie: the
    original grid before its widenings), or ``None`` while a point is not done on every
    seed (or the grid is empty)."""
    if not grid or any(s not in scores.get(params_key(p), {}) for p in grid for s in seeds):
        return None
    means = [statistics.fmean(scores[params_key(p)][s] for s in seeds) for p in grid]
    return grid[means.index(max(means))]


def edges(grid: Grid, point: dict[str, float], widen: Sequence[str]) -> dict[str, float]:
    """The widened parameters at whose smallest or largest grid value ``point`` sits ->
    the value one factor of 2 beyond (parameters the grid does not vary are no edge)."""
    out = {}
    for name in widen:
        values = sorted({p[name] for p in grid})
        if len(values) > 1 and point[name] == values[-1]:
            out[name] = point[name] * 2
        elif len(values) > 1 and point[name] == values[0]:
            out[name] = point[name] / 2
    return out


def widened(
    grid: Grid, scores: dict[str, dict], seeds: Sequence[int], widen: Sequence[str], rounds: int
) -> tuple[Grid, bool]:
    """The rule of the module docs, pure: ``grid`` as far as ``scores`` (validation top-1 by
    params key and seed) widen it in the parameters ``widen``, at most ``rounds`` times, and
    whether it is final (every point done, the choice off the edges or the rounds used)."""
    grid = list(grid)
    if len(grid) == 1:
        return grid, True
    for _ in range(rounds):
        best = best_point(grid, scores, seeds)
        if best is None:
            return grid, False
        beyond = edges(grid, best, widen)
        if not beyond:
            return grid, True
        known = {params_key(p) for p in grid}
        options = [(v, beyond[k]) if k in beyond else (v,) for k, v in best.items()]
        grid += [
            dict(zip(best, values))
            for values in itertools.product(*options)
            if params_key(dict(zip(best, values))) not in known
        ]
    return grid, best_point(grid, scores, seeds) is not None


def final_grid(settings: CompareSettings, records: list[Record], method: str) -> tuple[Grid, bool]:
    """``method``'s grid as far as the finished runs widen it, and whether it is final."""
    seeds = settings.grid_seeds
    scores = grid_scores(records, method, seeds)
    widen = WIDEN.get(method, ())
    return widened(settings.grids[method], scores, seeds, widen, settings.widen_rounds)


def chosen_point(settings: CompareSettings, records: list[Record], method: str) -> dict | None:
    """The point of ``method``'s final grid chosen on validation; ``None`` before it is final."""
    grid, final = final_grid(settings, records, method)
    if not final:
        return None
    return best_point(grid, grid_scores(records, method, settings.grid_seeds), settings.grid_seeds)


def method_tasks(settings: CompareSettings, records: list[Record], method: str) -> list[Task]:
    """Every run of ``method`` that can be planned now (done or not)."""
    if method in REPLAYS:  # one run per seed and search, after the search
        return [
            Task("run", method, s, "default", (search_key(REPLAYS[method], x),), search=x)
            for s in settings.seeds
            for x in settings.search_seeds
        ]
    deps: tuple[str, ...] = ()
    grid, final = final_grid(settings, records, method)
    if len(grid) == 1:
        return [Task("run", method, s, params_key(grid[0]), deps) for s in settings.seeds]
    tasks = [Task("run", method, s, params_key(p), deps) for s in settings.grid_seeds for p in grid]
    if final:
        waits = tuple(t.key for t in tasks)
        others = [s for s in settings.seeds if s not in settings.grid_seeds]
        tasks += [Task("run", method, s, CHOSEN, deps + waits) for s in others]
    return tasks


def plan(settings: CompareSettings, records: list[Record]) -> list[Task]:
    """The tasks not done in ``records`` that can be planned now: the searches the methods
    replay, then the runs seed by seed; a dependency already done is dropped."""
    done = {r["key"] for r in records}
    recipes = sorted({REPLAYS[m] for m in settings.methods if m in REPLAYS})
    tasks = [Task("search", r, search=x) for r in recipes for x in settings.search_seeds]
    for method in settings.methods:
        tasks += method_tasks(settings, records, method)
    tasks.sort(key=lambda t: (t.kind != "search", t.seed not in settings.grid_seeds, t.seed))
    return [
        Task(
            t.kind, t.method, t.seed, t.params, tuple(d for d in t.deps if d not in done), t.search
        )
        for t in tasks
        if t.key not in done
    ]


def resolve(settings: CompareSettings, records: list[Record], task: Task) -> dict[str, float]:
    """The grid point ``task`` runs at: its own, or for a `CHOSEN` run the choice."""
    if task.params != CHOSEN:
        return parse_params(task.params)
    point = chosen_point(settings, records, task.method)
    if point is None:  # the planner makes a chosen run only once its grid is final
        raise RuntimeError(f"{task.key}: {task.method}'s grid is not final yet")
    return point


def current_point(settings: CompareSettings, records: list[Record], method: str) -> dict | None:
    """While a grid is not final: the best of its points done on every grid seed so far, by
    the same rule (what a report of a comparison in progress shows, marked as such)."""
    grid, _ = final_grid(settings, records, method)
    seeds = settings.grid_seeds
    scores = grid_scores(records, method, seeds)
    done = [p for p in grid if all(s in scores.get(params_key(p), {}) for s in seeds)]
    return best_point(done, scores, seeds)


def choice_runs(
    settings: CompareSettings, records: list[Record], method: str, provisional: bool = False
) -> dict[int, Record]:
    """The runs, by seed, that report ``method``: its chosen point on the grid seeds and its
    chosen runs elsewhere (a single-point method: all its runs; a method that replays the
    searches: per seed, its runs pooled over the searches, `pooled`). ``provisional``: while
    the grid is not final, the runs of its `current_point` instead of none."""
    runs = [r for r in records if r["kind"] == "run" and r["method"] == method]
    if method in REPLAYS:
        return pooled(runs)
    grid, _ = final_grid(settings, records, method)
    if len(grid) == 1:
        return {r["seed"]: r for r in runs}
    point = chosen_point(settings, records, method)
    if point is None and provisional:
        point = current_point(settings, records, method)
    if point is None:
        return {}
    key = params_key(point)  # a chosen run made at another point (superseded) is not it
    return {
        r["seed"]: r
        for r in runs
        if params_key(r["params"]) == key
        and (r["seed"] in settings.grid_seeds or r["key"].endswith(f":{CHOSEN}"))
    }


def complete_block(cells: dict[int, set[int]]) -> tuple[list[int], list[int]]:
    """The searches and seeds of the complete table (every search on every seed, at least
    two seeds) that keeps the most of the search's variance: two or more searches where
    any such table exists, then the most cells, then the most searches (then the smallest
    search seeds). ``([], [])`` when no search ran on two seeds. Past 8 searches, the
    search on the fewest seeds is dropped until two seeds are shared."""
    searches = sorted(cells)
    if len(searches) > 8:
        kept = sorted(searches, key=lambda x: (-len(cells[x]), x))
        while len(kept) > 1 and len(set.intersection(*(cells[x] for x in kept))) < 2:
            kept.pop()
        subsets = [sorted(kept)]
    else:
        subsets = [
            list(chosen)
            for size in range(len(searches), 0, -1)
            for chosen in itertools.combinations(searches, size)
        ]
    best: tuple[tuple[bool, int, int], list[int], list[int]] = ((False, 0, 0), [], [])
    for chosen in subsets:
        seeds = sorted(set.intersection(*(cells[x] for x in chosen)))
        rank = (len(chosen) >= 2, len(chosen) * len(seeds), len(chosen))
        if len(seeds) >= 2 and rank > best[0]:
            best = (rank, chosen, seeds)
    return best[1], best[2]


def pooled(runs: list[Record]) -> dict[int, Record]:
    """Per seed, one record for a replay's runs over the searches it replays, on the
    largest complete table of searches x seeds (`complete_block`): the mean of their
    top-1, validation top-1 and wall time; ``cells`` (search -> top-1, for the crossed
    interval), ``searches`` (how many) and ``of_searches`` (how many have runs at all)."""
    by_search: dict[int, dict[int, Record]] = {}
    for r in runs:
        by_search.setdefault(r.get("search_seed", 0), {})[r["seed"]] = r
    searches, seeds = complete_block({x: set(v) for x, v in by_search.items()})
    out = {}
    for seed in seeds:
        group = [by_search[x][seed] for x in searches]
        mean = {k: statistics.fmean(r[k] for r in group) for k in ("top1", "val_top1", "wall_s")}
        cells = {x: by_search[x][seed]["top1"] for x in searches}
        out[seed] = {**group[0], **mean, "cells": cells, "searches": len(searches),
                     "of_searches": len(by_search)}  # fmt: skip
    return out
