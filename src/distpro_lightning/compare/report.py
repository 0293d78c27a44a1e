"""The report of a comparison: a Markdown table (test top-1 mean ± std over the paired
seeds, recommended − method with its paired 95 % t-interval and, beside it, the interval
and p-value adjusted by Holm over the family of differences, the chosen grid points, the
cost per method in units of the Hinton KD run), a plot, and both logged to the loggers of
the pair's ``trainer`` settings (a table where the logger takes one, else text, metrics
and the figure). The statistics are `distpro_lightning.functional.stats`."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distpro_lightning.compare.plan import (
    Record,
    choice_runs,
    chosen_point,
    current_point,
    edges,
    final_grid,
    grid_scores,
    params_key,
    plan,
)
from distpro_lightning.compare.results_file import read_results
from distpro_lightning.compare.settings import LABELS, OURS, REPLAYS, WIDEN, CompareSettings
from distpro_lightning.files import atomic_save_figure, atomic_write_text
from distpro_lightning.functional.stats import (
    PairedResult,
    crossed_t,
    holm,
    holm_levels,
    two_table_t,
)

COLUMNS = ["method", "chosen point", "seeds", "test top-1 %", "val top-1 %"]
COLUMNS += ["recommended − method, 95 % CI", "Holm-adjusted CI, p", "cost × Hinton KD"]


def point_text(point: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in point.items()) or "–"


def mean_std(values: Sequence[float]) -> str:
    vals = [100 * v for v in values]
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.fmean(vals):.2f} ± {std:.2f}"


def recommended(settings: CompareSettings, runs: dict[str, dict[int, Record]]) -> str | None:
    """``settings.recommended``, or the DistPro method with the best mean validation top-1
    (never the test set) among those run on the most seeds."""
    if settings.recommended != "auto":
        return settings.recommended if runs.get(settings.recommended) else None
    ours = [m for m in OURS if runs.get(m)]
    if not ours:
        return None
    return max(ours, key=lambda m: (len(runs[m]), statistics.fmean(
        r["val_top1"] for r in runs[m].values())))  # fmt: skip


def difference(
    best: dict[int, Record], other: dict[int, Record], level: float = 0.95
) -> PairedResult | None:
    """best − other in points over their common seeds (``None`` under two). Where both
    replay the same searches, paired by search and seed (`crossed_t`); else each as a
    table of its own searches x the seeds (one row without searches), their searches
    independent (`two_table_t`; two methods without searches: the paired t)."""
    seeds = sorted(set(best) & set(other))
    if len(seeds) < 2:
        return None

    def table(runs: dict[int, Record]) -> list[list[float]]:
        cells = runs[seeds[0]].get("cells")
        if not cells:
            return [[100 * runs[k]["top1"] for k in seeds]]
        return [[100 * runs[k]["cells"][x] for k in seeds] for x in sorted(cells)]

    a, b = table(best), table(other)
    if len(a) > 1 and set(best[seeds[0]]["cells"]) == set(other[seeds[0]].get("cells") or {}):
        return crossed_t([[x - y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)], level)
    return two_table_t(a, b, level)


def differences(
    runs: dict[str, dict[int, Record]], best: str | None
) -> dict[str, tuple[PairedResult, PairedResult, float]]:
    """Per method: the result of best − method (points, `difference`), the same at its
    Holm level, and its Holm-adjusted p-value (Holm over every method compared)."""
    if best is None:
        return {}
    plain = {m: difference(runs[best], r) for m, r in runs.items() if m != best}
    names = [m for m, result in plain.items() if result is not None]
    p_values = [plain[m].p_value for m in names]  # type: ignore[union-attr]
    adjusted, levels = holm(p_values), holm_levels(p_values)
    return {
        m: (plain[m], difference(runs[best], runs[m], levels[i]), adjusted[i])  # type: ignore[misc]
        for i, m in enumerate(names)
    }


def cost(
    records: list[Record], method: str, runs: dict[int, Record], kd_runs: dict[int, Record]
) -> float | None:
    """Mean wall time of ``method``'s run plus the search it replays, over the mean wall
    time of the Hinton KD runs the table reports (``kd_runs``; else all of them)."""
    kd = [r["wall_s"] for r in kd_runs.values()] or [
        r["wall_s"] for r in records if r["kind"] == "run" and r["method"] == "hinton_kd"
    ]
    if not kd or not runs:
        return None
    recipe = REPLAYS.get(method)
    search = [r["wall_s"] for r in records if r["kind"] == "search" and r["method"] == recipe]
    own = statistics.fmean(r["wall_s"] for r in runs.values())
    own += statistics.fmean(search) if search else 0.0  # one search serves a deployment
    return own / statistics.fmean(kd)


def seeds_text(by_seed: dict[int, Record]) -> str:
    """``5``, or for a method pooled over searches ``5 × 3 searches`` (``5 × 1 search, of
    3 so far`` while the other searches lack seeds for a complete table)."""
    first = next(iter(by_seed.values()))
    if "searches" not in first:
        return str(len(by_seed))
    n, of = first["searches"], first.get("of_searches", first["searches"])
    text = f"{len(by_seed)} × {n} search{'es' if n > 1 else ''}"
    return text if of == n else f"{text}, of {of} so far"


def reported_runs(payload: dict[str, Any], settings: CompareSettings) -> dict[str, dict]:
    """Per method with runs, the runs (by seed) its row reports."""
    records = payload["records"]
    runs = {m: choice_runs(settings, records, m, provisional=True) for m in settings.methods}
    return {m: r for m, r in runs.items() if r}


def table_rows(
    payload: dict[str, Any], settings: CompareSettings
) -> tuple[list[list[str]], str | None]:
    """The rows of the table (``COLUMNS``) and the recommended method."""
    records = payload["records"]
    runs = reported_runs(payload, settings)
    best = recommended(settings, runs)
    diffs = differences(runs, best)
    rows = []
    for method, by_seed in runs.items():
        shown = point_text(next(iter(by_seed.values()))["params"])
        if len(settings.grids[method]) > 1 and not final_grid(settings, records, method)[1]:
            shown += " (so far: grid not done)"
        vs, holm_text = "–", "–"
        if method in diffs:
            plain, level, p = diffs[method]
            vs = f"{plain.mean:+.2f} [{plain.low:+.2f}, {plain.high:+.2f}]"
            holm_text = (
                f"[{level.low:+.2f}, {level.high:+.2f}] at {100 * level.level:.1f} %, p={p:.3g}"
            )
        c = cost(records, method, by_seed, runs.get("hinton_kd", {}))
        test = mean_std([r["top1"] for r in by_seed.values()])
        rows.append([
            LABELS[method], shown, seeds_text(by_seed), test,
            mean_std([r["val_top1"] for r in by_seed.values()]), vs, holm_text,
            "–" if c is None else f"{c:.2f}×",
        ])  # fmt: skip
    return rows, best


def grid_lines(payload: dict[str, Any], settings: CompareSettings) -> list[str]:
    """Each grid: its size, widening, the choice and whether it still sits on an edge."""
    lines = []
    for method in settings.methods:
        base = settings.grids[method]
        if len(base) == 1:
            continue
        grid, final = final_grid(settings, payload["records"], method)
        point = chosen_point(settings, payload["records"], method)
        scores = grid_scores(payload["records"], method, settings.grid_seeds)
        done = [p for p in grid if len(scores.get(params_key(p), {})) == len(settings.grid_seeds)]
        widened = f", widened from {len(base)}" if len(grid) > len(base) else ""
        head = f"- {LABELS[method]}: {len(grid)} points{widened}"
        if point is None:
            so_far = current_point(settings, payload["records"], method)
            pending = f"; so far {point_text(so_far)}" if so_far else ""
            lines.append(f"{head}; {len(done)} done on the grid seeds, choice pending{pending}.")
            continue
        edge = ", ".join(edges(grid, point, WIDEN.get(method, ())))
        where = f"still on the edge of {edge}" if edge else "inside the grid"
        lines.append(f"{head}; chosen {point_text(point)} ({where}).")
    return lines


def pairing_line(records: list[Record]) -> str:
    """What the pairing check covered: the runs whose fingerprints it compared per seed."""
    runs = [r for r in records if r["kind"] == "run"]
    checked = [r for r in runs if "pairing" in r]
    seeds = sorted({r["seed"] for r in checked})
    line = (
        f"Pairing checked: the {len(checked)} runs share, per seed ({len(seeds)} seeds), the "
        "initial student and the first batches (fingerprints in the results file)."
    )
    if not checked and runs:
        line = "Pairing not checked here:"
    if len(checked) < len(runs):
        line += (
            f" {len(runs) - len(checked)} runs carry no fingerprints (made by another "
            "runner, see the calls below): their pairing is that runner's."
        )
    return line


def verdict_line(runs: dict[str, dict], best: str | None) -> str:
    """Whether the DistPro method compared is also the best of every method on validation,
    or which method beats it there (then DistPro is not what this pair should use)."""
    if best is None:
        return "Verdict: – (no DistPro method has runs yet)."

    def val(m: str) -> float:
        return 100 * statistics.fmean(r["val_top1"] for r in runs[m].values())

    top = max(runs, key=val)
    if top == best or val(top) <= val(best):
        return (
            f"Verdict: {LABELS[best]} has the best mean validation top-1 of every method "
            f"({val(best):.2f} %)."
        )
    return (
        f"Verdict: on validation **{LABELS[top]}** ({val(top):.2f} %) beats the DistPro "
        f"method compared ({val(best):.2f} %): on this pair, use {LABELS[top]}; DistPro is "
        "not recommended over it."
    )


def caveat_lines(payload: dict[str, Any], settings: CompareSettings, runs: dict) -> list[str]:
    """A comparison still under way, and replays whose interval holds one search only."""
    lines = []
    left = plan(settings, payload["records"])
    if left:
        done = sum(r["kind"] in ("run", "search") for r in payload["records"])
        lines.append(
            f"**In progress:** {done} tasks done, {len(left)} planned (more as grids widen); "
            "rows marked 'so far' and the intervals will change."
        )
    for method, by_seed in runs.items():
        if next(iter(by_seed.values())).get("searches") == 1:
            lines.append(
                f"{LABELS[method]} replays one search: its intervals hold the seeds' "
                "variance only, conditional on that search."
            )
    return [line for text in lines for line in (text, "")]


def report_text(payload: dict[str, Any], settings: CompareSettings) -> str:
    rows, best = table_rows(payload, settings)
    runs = reported_runs(payload, settings)
    lines = [
        "# Is DistPro worth it on this pair?", "",
        *caveat_lines(payload, settings, runs),
        "Test top-1 of the final weights, mean ± std over the paired seeds "
        f"{list(settings.seeds)}; grids run on seeds {list(settings.grid_seeds)} and their "
        "point with the best mean validation top-1 runs on the others (the test set chooses "
        "nothing). Differences are paired per seed, in points, with 95 % t-intervals; beside "
        "them the intervals at Holm's step-down levels over the family of differences and "
        "Holm-adjusted p-values. A method that replays searches is pooled: per seed, the "
        "mean over its searches (on the largest table of searches x seeds where each search "
        "ran on each seed); its differences are crossed intervals over searches and seeds "
        "(the spread of the searches counts, not only the seeds'). Cost: a run plus one "
        "search it replays, in Hinton KD runs.",
        "", f"DistPro method compared: **{LABELS.get(best, '–') if best else '–'}** "
        f"({'the best DistPro method on validation' if settings.recommended == 'auto' else 'given'}"
        ").", "", verdict_line(runs, best), "",
        "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS),
        *["| " + " | ".join(row) + " |" for row in rows], "",
    ]  # fmt: skip
    grids = grid_lines(payload, settings)
    if grids:
        lines += ["Grids (chosen on validation, widened beyond an edge by a factor 2, at most "
                  f"{settings.widen_rounds} times):", "", *grids, ""]  # fmt: skip
    lines += [pairing_line(payload["records"]), ""]
    if payload.get("cuts"):
        lines += [f"Cut to the budget: {', '.join(payload['cuts'])}.", ""]
    for note in payload.get("notes", []):  # what the file's maker says of its records
        lines += [f"Note: {note}", ""]
    if payload.get("estimate"):
        lines += [f"Estimate before the start: {payload['estimate']['text']}", ""]
    wall = sum(r["wall_s"] for r in payload["records"])
    lines += [f"Task time: {wall / 60:.1f} min (summed over tasks). Calls:", ""]
    lines += [f"- `{h['command']}` ({h['started']})" for h in payload["history"]]
    return "\n".join(lines) + "\n"


def figure(payload: dict[str, Any], settings: CompareSettings) -> Any:
    """Test top-1 per method: every seed's run and the mean ± std."""
    from matplotlib.figure import Figure

    runs = {m: choice_runs(settings, payload["records"], m, True) for m in settings.methods}
    runs = {m: r for m, r in runs.items() if r}
    fig = Figure(figsize=(7, 0.6 * len(runs) + 1.5), constrained_layout=True)
    ax = fig.subplots()
    for i, by_seed in enumerate(runs.values()):
        tops = [100 * r["top1"] for r in by_seed.values()]
        std = statistics.stdev(tops) if len(tops) > 1 else 0.0
        ax.errorbar([statistics.fmean(tops)], [i], xerr=[std], fmt="o", color="C0", capsize=3)
        ax.scatter(tops, [i] * len(tops), color="C1", s=10, zorder=3)
    ax.set_yticks(range(len(runs)), [LABELS[m] for m in runs], fontsize=7)
    ax.set(xlabel="test top-1 % (dots: seeds; bar: mean ± std)", title="paired comparison")
    return fig


def loggers_of(pair: Any) -> list[Any]:
    from lightning.pytorch.loggers import Logger

    given = pair.trainer.get("logger") if pair is not None else None
    given = given if isinstance(given, list | tuple) else [given]
    return [lg for lg in given if isinstance(lg, Logger)]


def log_report(loggers: list[Any], text: str, rows: list[list[str]], fig: Any) -> None:
    """The table to each logger: ``log_table`` (W&B), else the experiment's ``add_text``
    and ``add_figure`` (TensorBoard); the mean top-1 per method as metrics to all."""
    for logger in loggers:
        if hasattr(logger, "log_table"):
            logger.log_table("compare/table", columns=COLUMNS, data=rows)
        elif hasattr(getattr(logger, "experiment", None), "add_text"):
            logger.experiment.add_text("compare/report", text)
            logger.experiment.add_figure("compare/top1", fig)
        metrics = {}
        for row in rows:
            metrics[f"compare/test_top1/{row[0]}"] = float(row[3].split(" ± ")[0])
        logger.log_metrics(metrics)
        logger.save()


def write_report(
    payload: dict[str, Any], settings: CompareSettings, results: Path, pair: Any = None
) -> str:
    """``results`` with ``.md`` (the text) and ``.png`` (the plot); logged where the pair's
    trainer settings give loggers. Returns the text."""
    text = report_text(payload, settings)
    atomic_write_text(results.with_suffix(".md"), text)
    fig = figure(payload, settings)
    atomic_save_figure(results.with_suffix(".png"), fig)
    log_report(loggers_of(pair), text, table_rows(payload, settings)[0], fig)
    return text


def settings_of(payload: dict[str, Any], results: Path) -> CompareSettings:
    """The settings a results file was run under (after any budget cut), at ``results``."""
    if "effective" in payload:
        given = dict(payload["effective"])
    else:
        given = dict(payload.get("settings", {}).get("compare", {}))
    given["results"] = str(results)
    return CompareSettings(**given)


def render(results: str | Path) -> str:
    """Write a results file's report (``.md``) and plot (``.png``) again from its records
    and the settings it holds, with no model or data (``distpro compare --report``);
    returns the text. The same functions write them after a run, so a re-render of an
    unchanged file reproduces its report byte for byte."""
    path = Path(results)
    if not path.is_file():
        raise FileNotFoundError(
            f"compare --report: no results file at {path}; give the compare.results of a "
            "comparison (a .json file)."
        )
    payload = read_results(path)  # upgraded in memory: the file and its processes stay
    return write_report(payload, settings_of(payload, path), path)
