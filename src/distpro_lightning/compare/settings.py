"""The typed settings of a paired comparison (``compare:`` in ``distpro compare``'s config):
which methods, their grids, the seeds, the search recipes and the wall-time budget.

Every setting is checked when it is built; a bad one is refused with a message that names
it and the fix. The defaults are the evidence protocol's (docs/quality.md): the issue-34
grids, five paired seeds with the grids run on seeds 0 and 1, two widening rounds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

#: The methods a comparison can hold, in the order of the report.
METHODS: tuple[str, ...] = (
    "student",
    "hinton_kd",
    "reviewkd",
    "equal",
    "fixed",
    "alpha_T",
    "distpro",
    "distpro_cheap",
    "transfer",
)
LABELS: dict[str, str] = {
    "student": "student alone (CE)",
    "hinton_kd": "Hinton KD",
    "reviewkd": "ReviewKD",
    "equal": "equal weights",
    "fixed": "fixed combination of the space (tuned weights)",
    "alpha_T": "use alpha_T (full search's final weights)",
    "distpro": "DistPro, full search (the frozen recipe)",
    "distpro_cheap": "DistPro, cheap recipe (25 % proxy search, alpha every 4th step)",
    "transfer": "DistPro, transferred process (no search here)",
}
#: The DistPro methods, among which the recommended one is chosen on validation.
OURS: tuple[str, ...] = ("alpha_T", "distpro", "distpro_cheap", "transfer")
#: The search recipe whose process each replaying method uses.
REPLAYS: dict[str, str] = {"alpha_T": "full", "distpro": "full", "distpro_cheap": "cheap"}

Grid = list[dict[str, float]]


def _product(name: str, values: Sequence[float], other: str, others: Sequence[float]) -> Grid:
    return [{name: float(a), other: float(b)} for a in values for b in others]


#: Each baseline's grid, as in the evidence protocol (issue 34's grids). ``w`` is the
#: distillation weight (the module's ``kd_weight``; ReviewKD's ``review_weight``), ``T``
#: Hinton KD's temperature, ``warm`` ReviewKD's warm-up as a fraction of the epochs (the
#: paper's 20 of 240), ``f`` the fixed combination's share on the feature pathways.
DEFAULT_GRIDS: dict[str, Grid] = {
    "hinton_kd": _product("w", (0.5, 1.0, 2.0), "T", (2.0, 4.0)),
    "reviewkd": _product("w", (0.5, 1.0, 4.0), "warm", (0.0, 1 / 12)),
    "equal": [{"w": w} for w in (0.5, 1.0, 2.0)],
    "fixed": _product("w", (0.5, 1.0, 2.0), "f", (0.2, 0.5, 0.8)),
}
#: The parameters each method takes (a grid point naming another is refused).
PARAMETERS: dict[str, tuple[str, ...]] = {
    "hinton_kd": ("w", "T"),
    "reviewkd": ("w", "warm"),
    "equal": ("w",),
    "fixed": ("w", "f"),
}
#: Each parameter's range, ``(low, high, low included, high included, what it is)``: a point
#: outside it is refused when the settings are made, not when its run starts hours later.
RANGES: dict[str, tuple[float, float, bool, bool, str]] = {
    "w": (0.0, math.inf, False, False, "a distillation weight (w 0 is the student alone)"),
    "T": (0.0, math.inf, False, False, "a temperature"),
    "warm": (0.0, 1.0, True, False, "a fraction of the epochs"),
    "f": (0.0, 1.0, False, False, "the feature pathways' share"),
}
#: The parameters a grid widens beyond an edge (a share and a warm-up are bounded).
WIDEN: dict[str, tuple[str, ...]] = {
    "hinton_kd": ("w", "T"),
    "reviewkd": ("w",),
    "equal": ("w",),
    "fixed": ("w",),
}


@dataclass(frozen=True)
class SearchRecipe:
    """How a DistPro recipe searches its process: over ``epoch_fraction`` of the run's
    epochs (a proxy, replayed stretched over the whole run), alpha updated every
    ``every_n_steps``-th step at learning rate ``alpha_lr``."""

    epoch_fraction: float = 1.0
    every_n_steps: int = 1
    alpha_lr: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 < self.epoch_fraction <= 1.0:
            raise ValueError(
                f"compare.recipes: epoch_fraction must lie in (0, 1], got {self.epoch_fraction}."
            )
        if self.every_n_steps < 1 or self.alpha_lr <= 0:
            raise ValueError(
                "compare.recipes: every_n_steps must be >= 1 and alpha_lr > 0, got "
                f"{self.every_n_steps} and {self.alpha_lr}."
            )

    @property
    def proxy(self) -> bool:
        return self.epoch_fraction < 1.0


DEFAULT_RECIPES: dict[str, SearchRecipe] = {
    "full": SearchRecipe(),
    "cheap": SearchRecipe(epoch_fraction=0.25, every_n_steps=4),
}


@dataclass(frozen=True)
class Budget:
    """The wall-time budget, against the estimate made before the first run; what was cut
    is printed and kept in the report. Searches are never cut.

    Args:
        wall_s: seconds the comparison may take (``None``: no limit).
        cut: what goes when over budget: ``seeds`` (the last non-grid seeds, down to
            ``min_seeds``), ``grids`` (widening off, then the grids on the first grid seed
            only) or ``none`` (no cut).
        warmup_steps: the steps of each method timed for the estimate (the first is not
            counted).
        min_seeds: the fewest seeds a ``seeds`` cut leaves.
    """

    wall_s: float | None = None
    cut: Literal["seeds", "grids", "none"] = "seeds"
    warmup_steps: int = 3
    min_seeds: int = 2

    def __post_init__(self) -> None:
        if self.cut not in ("seeds", "grids", "none"):
            raise ValueError(f"compare.budget.cut must be seeds, grids or none, got {self.cut!r}.")
        if self.warmup_steps < 2:
            raise ValueError(
                "compare.budget.warmup_steps must be >= 2 (the first step is not timed), got "
                f"{self.warmup_steps}."
            )
        if self.wall_s is not None and self.wall_s <= 0:
            raise ValueError(f"compare.budget.wall_s must be > 0 or null, got {self.wall_s}.")
        if self.min_seeds < 2:
            raise ValueError(
                f"compare.budget.min_seeds must be >= 2 (a paired interval needs two seeds), "
                f"got {self.min_seeds}."
            )


@dataclass(frozen=True)
class CompareSettings:
    """What one comparison runs (the ``compare:`` section of ``distpro compare``).

    Args:
        results: the results file (JSON); its folder also holds the searched processes,
            the report (``.md``) and the plot (``.png``). A later command resumes it.
        methods: any of student, hinton_kd, reviewkd, equal, fixed, alpha_T, distpro,
            distpro_cheap, transfer (docs/tutorials/compare.md says what each is).
        seeds: the paired seeds: per seed every method starts from the same student
            weights and sees the same data order (and subset, where the data module takes
            a ``seed``).
        grid_seeds: the seeds on which the grids run (a subset of ``seeds``); the point
            with the best mean validation top-1 there runs on the other seeds.
        grids: per method, its grid (a list of points such as ``{w: 1.0, T: 4.0}``);
            methods not given keep the evidence protocol's: hinton_kd w in {0.5, 1, 2} x T
            in {2, 4}; reviewkd w in {0.5, 1, 4} x warm in {0, 1/12}; equal w in {0.5, 1,
            2}; fixed w in {0.5, 1, 2} x f in {0.2, 0.5, 0.8}.
        widen_rounds: how often a grid whose choice sits on an edge gains the points one
            factor of 2 beyond it.
        recipes: the search recipes ``full`` and ``cheap`` (`SearchRecipe`).
        search_seeds: the seeds of each recipe's searches: one search per seed (on the
            data module of that seed, a subset of its own where it takes a seed), each
            replayed on every paired seed. A method that replays them is reported pooled
            (per paired seed, the mean over its searches) with crossed intervals over
            searches and seeds, which hold the search's variance (the evidence protocol's
            three searches). A budget cut never drops a search: it would change what the
            intervals mean.
        transfer_process: the process file the ``transfer`` method replays.
        pathway_map: ``transfer``'s map from this module's pathway names to the file's
            (``"position"``, a dict, or ``None``: the same names).
        recommended: the method the differences are taken from: ``auto`` (the DistPro
            method with the best mean validation top-1) or a method name.
        jobs: runs at a time, each in its own process (needs the config file); a
            process starts in seconds, so tiny runs are faster with 1 (``--jobs N``).
        budget: `Budget`.
    """

    results: str = "compare/results.json"
    methods: Sequence[str] = ("student", "hinton_kd", "reviewkd", "equal", "alpha_T", "distpro")
    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    grid_seeds: Sequence[int] = (0, 1)
    grids: Mapping[str, Grid] = field(default_factory=dict)
    widen_rounds: int = 2
    recipes: Mapping[str, SearchRecipe] = field(default_factory=dict)
    search_seeds: Sequence[int] = (100, 2100, 3100)
    transfer_process: str | None = None
    pathway_map: dict[str, str] | str | None = None
    recommended: str = "auto"
    jobs: int = 1
    budget: Budget = field(default_factory=Budget)

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "grid_seeds", tuple(int(s) for s in self.grid_seeds))
        object.__setattr__(self, "search_seeds", tuple(int(s) for s in self.search_seeds))
        object.__setattr__(self, "recipes", {**DEFAULT_RECIPES, **_recipes(self.recipes)})
        if isinstance(self.budget, Mapping):
            object.__setattr__(self, "budget", Budget(**self.budget))
        self._check_methods()
        self._check_seeds()
        object.__setattr__(self, "grids", self._full_grids())
        if self.widen_rounds < 0 or self.jobs < 1:
            raise ValueError(
                f"compare: widen_rounds must be >= 0 and jobs >= 1, got {self.widen_rounds} "
                f"and {self.jobs}."
            )

    def _check_methods(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) < len(self.methods):
            raise ValueError(
                f"compare.methods: {list(self.methods)} has unknown or repeated names "
                f"{unknown}; choose distinct ones from {', '.join(METHODS)}."
            )
        if "transfer" in self.methods and not self.transfer_process:
            raise ValueError(
                "compare.methods has transfer but compare.transfer_process is not set: give "
                "the process file to transfer (e.g. from another pair's distpro compare)."
            )
        if "transfer" not in self.methods and self.transfer_process:
            raise ValueError(
                "compare.transfer_process is set but transfer is not in compare.methods: add "
                "transfer, or drop transfer_process."
            )
        if self.recommended != "auto" and self.recommended not in self.methods:
            raise ValueError(
                f"compare.recommended={self.recommended!r} is not among compare.methods; give "
                "auto or one of them."
            )

    def _check_seeds(self) -> None:
        if len(self.seeds) < 2 or len(set(self.seeds)) < len(self.seeds):
            raise ValueError(
                f"compare.seeds: {list(self.seeds)}; give at least two distinct seeds (a "
                "paired interval needs two)."
            )
        missing = [s for s in self.grid_seeds if s not in self.seeds]
        if not self.grid_seeds or missing or len(set(self.grid_seeds)) < len(self.grid_seeds):
            extra = f"; {missing} not in compare.seeds: add them there or drop them here"
            raise ValueError(
                f"compare.grid_seeds {list(self.grid_seeds)}: must be a non-empty subset of "
                f"compare.seeds {list(self.seeds)} without repeats{extra if missing else ''}."
            )
        if not self.search_seeds or len(set(self.search_seeds)) < len(self.search_seeds):
            raise ValueError(
                f"compare.search_seeds: {list(self.search_seeds)}; give one or more distinct "
                "seeds (three searches let the intervals hold the search's variance)."
            )

    def _full_grids(self) -> dict[str, Grid]:
        unused = [m for m in self.grids if m not in self.methods]
        if unused:
            raise ValueError(
                f"compare.grids gives grids for {unused}, which are not in compare.methods; "
                "add them to methods or drop their grids."
            )
        out: dict[str, Grid] = {}
        for method in self.methods:
            grid = [dict(p) for p in self.grids.get(method, DEFAULT_GRIDS.get(method, [{}]))]
            check_grid(method, grid)
            order = PARAMETERS.get(method, ())  # one order of the keys: one key per point
            out[method] = [{k: float(p[k]) for k in order} for p in grid]
        return out

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values (what a results file is resumed under)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["recipes"] = {k: vars(v) for k, v in self.recipes.items()}
        out["budget"] = vars(self.budget)
        out["methods"], out["seeds"] = list(self.methods), list(self.seeds)
        out["grid_seeds"] = list(self.grid_seeds)
        out["search_seeds"] = list(self.search_seeds)
        return out


def _recipes(given: Mapping[str, Any]) -> dict[str, SearchRecipe]:
    unknown = [k for k in given if k not in DEFAULT_RECIPES]
    if unknown:
        raise ValueError(f"compare.recipes: unknown recipe(s) {unknown}; give full or cheap.")
    return {k: v if isinstance(v, SearchRecipe) else SearchRecipe(**v) for k, v in given.items()}


def check_grid(method: str, grid: Grid) -> None:
    """Refuse an empty grid, a grid for a method that takes no parameters, or a point whose
    parameters differ from the method's."""
    wanted = set(PARAMETERS.get(method, ()))
    if not grid:
        raise ValueError(f"compare.grids.{method} is empty; give at least one point.")
    keys = [",".join(f"{k}={float(point[k]):g}" for k in sorted(point)) for point in grid]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(
            f"compare.grids.{method}: the points {repeated} are given more than once (points "
            "are told apart to 6 significant digits); give each point once."
        )
    for point in grid:
        if set(point) != wanted:
            takes = ", ".join(sorted(wanted)) or "no parameters (its grid is [{}])"
            raise ValueError(
                f"compare.grids.{method}: the point {point} does not name exactly the "
                f"method's parameters: {takes}."
            )
        for name, value in point.items():
            _check_range(method, point, name, float(value))


def _check_range(method: str, point: Mapping[str, float], name: str, value: float) -> None:
    low, high, low_in, high_in, what = RANGES[name]
    inside = (value >= low if low_in else value > low) and (
        value <= high if high_in else value < high
    )
    if not inside:
        bounds = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
        raise ValueError(
            f"compare.grids.{method}: the point {dict(point)} has {name} = {value:g}; {name} is "
            f"{what}, in {bounds}. Give values in that range."
        )
