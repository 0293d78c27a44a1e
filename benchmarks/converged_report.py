"""Statistics, tables and plots of the converged protocol's results file.

Per pair and method, the grid point with the best mean *validation* top-1 is chosen (never
the test set); its test top-1 is reported as mean +- std over seeds, with the paired
per-seed difference DistPro - method and its 95 % t-interval."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import converged_grids as grids
from benchmarks.converged_grids import params_key
from distpro_lightning.files import atomic_save_figure, atomic_write_text

LABELS = {
    "student": "student alone (CE)",
    "hinton_kd": "Hinton KD",
    "fitnet": "FitNet hint",
    "reviewkd": "ReviewKD",
    "equal": "equally weighted",
    "alpha_T": "use alpha_T",
    "distpro": "DistPro (searched process)",
    "random": "control: random process",
    "reversed": "control: process reversed in time",
    "distpro_seed2": "control: process of a second search seed",
    "search_main": "control: the search run's own student (800 images)",
    "distpro_warm": "lever: second search pass, warm-started",
    "alpha_T_warm": "lever: alpha_T of the second search pass",
    "distpro_kd": "lever: search space with the KD pathway",
    "alpha_T_kd": "lever: alpha_T of the search with the KD pathway",
    "distpro_review": "lever: search space with the ReviewKD and KD pathways",
    "alpha_T_review": "lever: alpha_T of the search with the ReviewKD and KD pathways",
    "distpro_cheap": "cheap recipe: 25 % proxy search, alpha every 4th step, stretched",
    "distpro_proxy_review": "cheap recipe, recommended space: 25 % proxy search, stretched",
    "distpro_cheap_review": (
        "cheap recipe, recommended space: 25 % proxy search, alpha every 4th step, stretched"
    ),
    "distpro_cheap10_review": (
        "cheap recipe, recommended space: 10 % proxy search, alpha every 4th step, stretched"
    ),
    "distpro_review_lr3": "lever: search space with the ReviewKD and KD pathways, 3x alpha lr",
    "distpro_review_lr10": "lever: search space with the ReviewKD and KD pathways, 10x alpha lr",
    "uniform_review": "control: recommended space at the search's uniform start, no search",
    "distpro_fast": "lever: 10x alpha learning rate",
    "distpro_avg": "lever: 4 held-out batches per step",
    "distpro_smooth": "lever: replay smoothed over 25 search rows",
    "fixed_review": "fixed combination of the recommended space (tuned weights)",
    "distpro_review_s2": "frozen recipe, second search",
    "distpro_review_s3": "frozen recipe, third search",
    "distpro_review_half": "frozen recipe (first search) replayed over half the epochs",
    "transfer_review": "pair 1's frozen-recipe process transferred, no search here",
    "distpro_review_mean": "lever: the frozen recipe's three searches averaged into one process",
    "distpro_review_val4": "lever: the frozen recipe's first search with 4 held-out batches a step",
    "distpro_review_fromfixed": (
        "lever: the frozen recipe's first search started at the tuned fixed combination"
    ),
}
ORDER = list(LABELS)
# two-sided 95 % quantiles of Student's t, by degrees of freedom
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}
T975 |= {9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t_quantile(df: int) -> float:
    if df in T975:
        return T975[df]
    below = [k for k in T975 if k < df]
    return T975[max(below)] if df < 30 else 1.96


def paired_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval of paired differences."""
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = t_quantile(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


FROZEN_RECIPE = "distpro_review"  # issue 34's recipe (benchmarks/freeze_recipe.py)
GRID_SEEDS = (0, 1)  # the baselines' grids run on these seeds; the chosen point on all
# our variants, among which the recommended recipe is chosen on validation
OURS = ("alpha_T", "distpro", "distpro_warm", "alpha_T_warm", "distpro_kd", "alpha_T_kd")
OURS += ("distpro_review", "alpha_T_review", "distpro_cheap", "distpro_proxy_review")
OURS += ("distpro_cheap_review", "distpro_cheap10_review", "distpro_review_lr3")
OURS += ("distpro_review_lr10",)


def chosen_runs(
    records: list[dict[str, Any]],
    pair: str,
    grid_seeds: tuple[int, ...] = GRID_SEEDS,
    gset: Mapping[str, list[dict[str, float]]] = grids.GRIDS,
) -> dict[str, dict[int, dict]]:
    """Per method, the runs (by seed) of the grid point with the best mean validation top-1
    over the grid seeds (all seeds where a method has no grid seeds); for a baseline's grid,
    `converged_grids.current_choice`, the very rule the planner chooses by."""
    groups: dict[tuple[str, str], dict[int, dict]] = {}
    for r in records:
        if r.get("pair") != pair or r["kind"] == "teacher":
            continue
        method = r["method"]
        if method.startswith("search_") and method != "search_main":
            continue
        key = (method, params_key(r.get("params", {})))
        if method == "search_main":
            key = (method, "")
        groups.setdefault(key, {})[r["seed"]] = r
    best: dict[str, dict[str, Any]] = {}
    for (method, _), runs in groups.items():
        on_grid = [x["val_top1"] for s, x in runs.items() if s in grid_seeds] or [
            x["val_top1"] for x in runs.values()
        ]
        score = (len(on_grid), statistics.mean(on_grid), len(runs))
        if method not in best or score > best[method]["score"]:
            best[method] = {"score": score, "runs": runs}
    chosen = {m: v["runs"] for m, v in best.items()}
    for method in chosen:  # a baseline's grid: the planner's own choice
        if len(gset.get(method, [])) > 1:
            choice = grids.current_choice(records, pair, method, list(grid_seeds), gset)
            if choice is not None and (method, params_key(choice)) in groups:
                chosen[method] = groups[method, params_key(choice)]
    return chosen


def recommended(runs: dict[str, dict[int, dict]]) -> str | None:
    """Our variant with the best mean validation top-1 (never the test set), among those
    run on the most seeds."""
    ours = [m for m in OURS if m in runs]
    if not ours:
        return None
    return max(
        ours,
        key=lambda m: (len(runs[m]), statistics.mean(r["val_top1"] for r in runs[m].values())),
    )


def pct(values: list[float]) -> str:
    vals = [100 * v for v in values]
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.2f} ± {std:.2f}"


def diff_text(a: dict[int, dict], b: dict[int, dict]) -> str:
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return "–"
    mean, lo, hi = paired_interval([100 * (a[s]["top1"] - b[s]["top1"]) for s in seeds])
    if math.isnan(lo):
        return f"{mean:+.2f} (1 seed)"
    return f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def pair_table(
    runs: dict[str, dict[int, dict]],
    pair: str,
    gset: Mapping[str, list[dict[str, float]]] = grids.GRIDS,
) -> list[str]:
    """The pair's table of ``runs`` (`chosen_runs` under the grids ``gset``)."""
    ours = runs.get("distpro", {})
    final = runs.get("alpha_T", {})
    frozen = gset is grids.GRID_SETS["issue34"]
    rec = FROZEN_RECIPE if frozen else recommended(runs)
    best = runs.get(rec, {}) if rec else {}
    how = (
        "frozen before issue 34's runs, benchmarks/results/frozen_recipe.md"
        if frozen
        else "best mean validation top-1 among our variants"
    )
    lines = [
        f"### {pair}",
        "",
        f"Recommended recipe ({how}): **{LABELS.get(rec, '–') if rec else '–'}**.",
        "",
        "| method | setting (chosen on validation) | seeds | test top-1 % | validation top-1 % "
        "| recommended − method, 95 % CI | DistPro − method, 95 % CI "
        "| method − use alpha_T, 95 % CI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in sorted(runs, key=ORDER.index):
        by_seed = runs[method]
        first = next(iter(by_seed.values()))
        setting = ", ".join(f"{k}={v:g}" for k, v in first.get("params", {}).items()) or "–"
        test = pct([r["top1"] for r in by_seed.values()])
        val = pct([r["val_top1"] for r in by_seed.values()])
        vs_rec = "–" if method == rec else diff_text(best, by_seed)
        diff = "–" if method == "distpro" else diff_text(ours, by_seed)
        vs_final = "–" if method == "alpha_T" else diff_text(by_seed, final)
        lines.append(
            f"| {LABELS[method]} | {setting} | {len(by_seed)} | {test} | {val} | {vs_rec} "
            f"| {diff} | {vs_final} |"
        )
    return [*lines, ""]


def grid_lines(
    records: list[dict[str, Any]],
    pair: str,
    grid_seeds: tuple[int, ...] = GRID_SEEDS,
    gset: Mapping[str, list[dict[str, float]]] = grids.GRIDS,
) -> list[str]:
    """Each baseline's grid on ``pair``: its points, the choice, and whether the choice sits
    on an edge (`benchmarks.converged_grids`: such a grid widens, at most `WIDEN_ROUNDS`
    times)."""
    seeds = list(grid_seeds)
    lines = []
    for method, base in gset.items():
        if len(base) == 1 or not any(
            r.get("pair") == pair and r.get("method") == method for r in records
        ):
            continue
        grid, final = grids.final_grid(method, records, pair, seeds, gset)
        ranges = ", ".join(
            f"{k} {min(p[k] for p in grid):g}–{max(p[k] for p in grid):g}" for k in grid[0]
        )
        widened = f", widened from {len(base)}" if len(grid) > len(base) else ""
        head = f"- {LABELS[method]}: {len(grid)} points ({ranges}{widened})"
        choice = grids.current_choice(records, pair, method, seeds, gset)
        shown = ", ".join(f"{k}={v:g}" for k, v in (choice or {}).items())
        scores = grids.grid_scores(records, pair, method, seeds)
        pending = len(grid) - len(grids.done_points(grid, scores, seeds))
        edge = ", ".join(grids.edges(grid, choice, grids.WIDEN.get(method))) if choice else ""
        if choice is None:
            lines.append(f"{head}; runs of its points pending.")
        elif not final:
            lines.append(f"{head}; chosen so far {shown}, runs of {pending} point(s) pending.")
        elif edge:
            lines.append(f"{head}; chosen {shown}, still on the edge of {edge}.")
        else:
            lines.append(f"{head}; chosen {shown}, inside the grid.")
    if not lines:
        return []
    head = (
        f"Grids ({pair}): chosen on the mean validation top-1 of seeds "
        f"{', '.join(map(str, seeds))}; a choice on an edge of its grid widens the grid by a "
        f"factor 2 beyond it, at most {grids.WIDEN_ROUNDS} times."
    )
    return [head, "", *lines, ""]


def _at_two_thirds(curve: list[list[float]]) -> float:
    """Validation top-1 at two thirds of training: the entry at epoch
    ``round(2 * epochs / 3) - 1`` (or the last one before it), whether the run validated
    every epoch or only there and at the end."""
    epochs = int(max(e for e, _ in curve)) + 1
    target = round(2 * epochs / 3) - 1
    before = [(e, v) for e, v in curve if e <= target]
    return float((before[-1] if before else curve[0])[1])


def convergence_lines(runs: dict[str, dict[int, dict]], pair: str) -> list[str]:
    """Is training over? Mean training loss in the last epoch and validation top-1 over the
    last third of training, per method (``runs``: the chosen grid points, `chosen_runs`)."""
    lines = [
        f"Convergence ({pair}): mean training loss of the last epoch; validation top-1 at "
        "2/3 of training and at the end (mean over seeds).",
        "",
        "| method | last-epoch train loss | val top-1 % at 2/3 | val top-1 % at end |",
        "|---|---|---|---|",
    ]
    for method in sorted(runs, key=ORDER.index):
        curves = [r["curve"] for r in runs[method].values() if r.get("curve", {}).get("val_top1")]
        if not curves:
            continue
        last_loss = statistics.mean(c["train_loss"][-1] for c in curves if c["train_loss"])
        mid = statistics.mean(_at_two_thirds(c["val_top1"]) for c in curves)
        end = statistics.mean(c["val_top1"][-1][1] for c in curves)
        lines.append(f"| {LABELS[method]} | {last_loss:.3f} | {100 * mid:.2f} | {100 * end:.2f} |")
    return [*lines, ""]


def diagnostics_lines(records: list[dict[str, Any]], pair: str) -> list[str]:
    """Search diagnostics (``distpro_lightning.search.diagnostics``), mean over seeds per search."""
    by_variant: dict[str, list[dict[str, float]]] = {}
    for r in records:
        if r.get("pair") == pair and r["kind"] == "search" and r.get("diagnostics"):
            by_variant.setdefault(r["method"], []).append(r["diagnostics"])
    if not by_variant:
        return []
    keys = ("agreement", "successive", "helps_fraction", "mean_val_loss_gain", "moving_fraction")
    lines = [
        f"Search diagnostics ({pair}; mean over seeds): agreement = cosine of hypergradients on"
        " two held-out batches at the same step; successive = cosine with the previous step;"
        " helps = fraction of diagnosed steps whose new alpha lowers the held-out loss after "
        "the real update; gain = mean decrease of that loss; moving = pathways whose weight "
        "moved beyond a random walk's spread.",
        "",
        "| search | seeds | agreement | successive | helps | gain | moving |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, diags in sorted(by_variant.items()):
        vals = [statistics.mean(d.get(k, math.nan) for d in diags) for k in keys]
        lines.append(f"| {variant} | {len(diags)} | " + " | ".join(f"{v:.3g}" for v in vals) + " |")
    return [*lines, ""]


# the core comparison of issue 20: the tuned baselines (with their grids), use alpha_T,
# DistPro and the search both replay
CORE = ("student", "hinton_kd", "reviewkd", "equal", "alpha_T", "distpro", "search_main")


def time_lines(records: list[dict[str, Any]], pair: str) -> list[str]:
    """The summed task time of the pair's core comparison and of all its tasks."""
    tasks = [r for r in records if r.get("pair") == pair and r["kind"] != "teacher"]
    core = [r for r in tasks if r.get("method") in CORE]
    hours = [sum(r["wall_s"] for r in rs) / 3600 for rs in (core, tasks)]
    return [
        f"Task time ({pair}): the core comparison (student alone, the three tuned baselines "
        f"with their grids, use alpha_T, DistPro and its search) {len(core)} tasks, "
        f"{hours[0]:.2f} h; every task of the pair {len(tasks)} tasks, {hours[1]:.2f} h "
        "(summed one-thread task times, measured while other work shared the 2 cores; with "
        "`--jobs 2` the wall clock is about half).",
        "",
    ]


def grid_seeds(payload: dict[str, Any]) -> tuple[int, ...]:
    """The seeds the results file's grids ran on (its ``--grid-seeds``)."""
    return tuple(payload.get("settings", {}).get("grid_seeds", GRID_SEEDS))


def report_text(payload: dict[str, Any], name: str) -> str:
    records = payload["records"]
    seeds = grid_seeds(payload)
    pairs = sorted({r["pair"] for r in records if r["kind"] != "teacher"})
    teachers = [r for r in records if r["kind"] == "teacher"]
    lines = [
        f"# DistPro quality, converged low-data protocol ({name})",
        "",
        "Made by (a later command resumes the file, adding only missing runs):",
        "",
        *[f"- `{h['command']}` ({h['machine']})" for h in payload["history"]],
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in payload["settings"].items()),
        "",
        *[
            f"Teacher {t['teacher']}: {t['epochs']} epochs on all 60,000 training images, "
            f"{100 * t['top1']:.2f} % test top-1 ({t['wall_s']:.0f} s, {t['device']})."
            for t in teachers
        ],
        "",
        "Test top-1 of the final weights; mean ± std over seeds; the difference columns are "
        "paired per-seed differences with their 95 % t-intervals (points). Baselines' grids "
        f"run on seeds {', '.join(map(str, seeds))}; the point with the best mean "
        "validation top-1 there runs on the other seeds. Searches are shared: one per "
        "variant on a subset disjoint from every seed's, replayed on every seed.",
        "",
    ]
    gset = grids.grid_set(payload.get("settings", {}))
    chosen = {pair: chosen_runs(records, pair, seeds, gset) for pair in pairs}
    if payload.get("settings", {}).get("grids") == "issue34":
        from benchmarks.converged_headline import cost_lines, headline_lines, versus_lines
        from benchmarks.converged_methods import PAIRS
        from benchmarks.converged_verdict import verdict_lines

        lines += headline_lines(chosen, LABELS)
        lines += verdict_lines(chosen, list(PAIRS), LABELS)
        lines += versus_lines(chosen, LABELS)
        lines += [
            "The same records through `distpro compare` (its grid rule, the recipe pooled "
            "over its searches per seed, paired intervals with Holm over every row of a "
            f"pair): `benchmarks/results/{name}/compare_<pair>.md`, from "
            "`compare_<pair>.json` (`python -m benchmarks.evidence_compare --name "
            f"{name}`; `distpro compare --report` renders it again).",
            "",
        ]
        for pair in pairs:
            grid_runs = {
                m: len(grids.final_grid(m, records, pair, list(seeds), gset)[0]) * len(seeds)
                for m in gset
            }
            ran = {r["method"] for r in records if r.get("pair") == pair}
            lines += cost_lines(pair, grid_runs, LABELS, ran=ran)
    for pair in pairs:
        lines += pair_table(chosen[pair], pair, gset) + grid_lines(records, pair, seeds, gset)
        lines += convergence_lines(chosen[pair], pair)
        lines += diagnostics_lines(records, pair) + time_lines(records, pair)
    wall = sum(r["wall_s"] for r in records)
    lines.append(f"Total task time: {wall / 3600:.2f} h (summed over tasks, not wall clock).")
    return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    records = payload["records"]
    pairs = sorted({r["pair"] for r in records if r["kind"] != "teacher"})
    if not pairs:
        return
    gset = grids.grid_set(payload.get("settings", {}))  # the tables' grids, not issue 20's
    fig = Figure(figsize=(11, 3.8 * len(pairs)), constrained_layout=True)
    axes = fig.subplots(len(pairs), 2, squeeze=False)
    for row, pair in zip(axes, pairs):
        for method, runs in sorted(
            chosen_runs(records, pair, grid_seeds(payload), gset).items(),
            key=lambda kv: ORDER.index(kv[0]),
        ):
            curves = [r["curve"] for r in runs.values() if r.get("curve", {}).get("val_top1")]
            if not curves:
                continue
            n = min(len(c["val_top1"]) for c in curves)
            xs = [curves[0]["val_top1"][i][0] + 1 for i in range(n)]
            ys = [100 * statistics.mean(c["val_top1"][i][1] for c in curves) for i in range(n)]
            row[0].plot(xs, ys, label=LABELS[method])
            m = min(len(c["train_loss"]) for c in curves)
            losses = [statistics.mean(c["train_loss"][i] for c in curves) for i in range(m)]
            row[1].plot(range(1, m + 1), losses, label=LABELS[method])
        row[0].set(title=f"{pair}: validation top-1", xlabel="epoch", ylabel="%")
        row[1].set(title=f"{pair}: training loss", xlabel="epoch", yscale="log")
        row[0].legend(fontsize=6)
    atomic_save_figure(path, fig, dpi=100)


def write_report(payload: dict[str, Any], out: Path, name: str) -> str:
    text = report_text(payload, name)
    atomic_write_text(out / f"{name}.md", text)
    plot(payload, out / f"{name}.png")
    return text
