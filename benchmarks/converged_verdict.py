"""Issue 34's verdict and the product's recommendation, computed from the final tables by the
rules registered before the runs (docs/quality.md, "Target" and "What the product then
recommends"), so that the README quotes a computation, not a reading.

* **Target**: on every pair, the frozen recipe (its three searches pooled per seed) beats
  tuned Hinton KD and tuned ReviewKD with a Holm-adjusted interval above zero, and beats the
  tuned fixed combination of its own space with one above zero on at least two pairs (the
  nine comparisons of the headline family, `converged_headline.holm_family`), decided when
  every pair is complete; before, only a complete pair's comparison whose unadjusted 95 %
  interval reaches zero makes it a final miss (`target`).
* **Recommendation**: among the rule's rows (`RULE_ROWS`), the one with the lowest one-run
  cost in ReviewKD runs (the mean over the priced pairs) whose paired difference to the
  pair's best row (best mean test top-1) has a 95 % interval reaching zero or above on every
  pair (with a fallback when no row does, `recommended`). If the target is met, the frozen
  recipe comes first and the budget option is the cheapest other row not worse than it.
"""

from __future__ import annotations

import statistics

from benchmarks.converged_headline import (
    FAMILY,
    POOLED,
    RECIPE,
    Chosen,
    comparisons,
    holm_family,
    pair_costs,
)
from distpro_lightning.functional import stats

RECIPE_ROW = "distpro_review"  # the frozen recipe's row (its three searches pooled)
RULE_ROWS = (RECIPE_ROW, "distpro_cheap_review", "uniform_review", "fixed_review")
RULE_ROWS += ("reviewkd", "hinton_kd")
SEEDS = 5  # every row's seeds (docs/quality.md)


def scores(runs: dict[str, dict[int, dict]], row: str, seeds: list[int]) -> list[float]:
    """Test top-1 (points) of ``row`` per seed: the recipe's mean over its three searches."""
    if row == RECIPE_ROW:
        return [statistics.fmean(100 * runs[m][s]["top1"] for m in RECIPE) for s in seeds]
    return [100 * runs[row][s]["top1"] for s in seeds]


def rule_seeds(runs: dict[str, dict[int, dict]]) -> list[int]:
    """The seeds on which every row of the rule ran (the recipe: all three searches)."""
    methods = [m for m in RULE_ROWS if m != RECIPE_ROW] + list(RECIPE)
    common = set(runs.get(methods[0], {}))
    for m in methods[1:]:
        common &= set(runs.get(m, {}))
    return sorted(common)


def target(
    chosen: Chosen, pairs: list[str], labels: dict[str, str] | None = None
) -> tuple[str, list[str]]:
    """("met" | "missed" | "open", one line per pair saying what its family shows).

    With every pair complete, the Holm-adjusted intervals decide. Before, a complete pair's
    comparison is a final miss only if its unadjusted 95 % interval reaches zero: Holm tests
    each comparison at a level of at least 95 %, so its adjusted interval is never narrower;
    one that clears zero unadjusted may still pass or fail as the family fills (its rank and
    level move with the other pairs' p-values), so it leaves the verdict open."""
    family, plain = holm_family(chosen), {(p, r): c["t"] for p, r, c in comparisons(chosen)}
    lines, complete, kd_miss, fixed_wins, fixed_miss = [], 0, False, 0, 0
    for pair in pairs:
        got = {rival: family.get((pair, rival)) for rival in FAMILY}
        done = all(g is not None and g[1].n == SEEDS for g in got.values())
        above = {r: g is not None and g[1].low > 0 for r, g in got.items()}
        never = {r: g is not None and plain[(pair, r)].low <= 0 for r, g in got.items()}
        shown = ", ".join(
            f"{(labels or {}).get(r, r)} [{g[1].low:+.2f}, {g[1].high:+.2f}]"
            if g
            else f"{(labels or {}).get(r, r)} not yet"
            for r, g in got.items()
        )
        lines.append(f"- {pair} ({'complete' if done else 'so far'}): Holm-adjusted {shown}")
        if done:
            complete += 1
            kd_miss |= never["hinton_kd"] or never["reviewkd"]
            fixed_wins += above["fixed_review"]
            fixed_miss += never["fixed_review"]
    if complete == len(pairs):
        kd_ok = all(family[(p, r)][1].low > 0 for p in pairs for r in ("hinton_kd", "reviewkd"))
        return ("met" if kd_ok and fixed_wins >= 2 else "missed"), lines
    if kd_miss or fixed_miss > len(pairs) - 2:
        return "missed", lines
    return "open", lines


def candidates(
    chosen: Chosen, reference: str | None = None
) -> dict[str, dict[str, stats.PairedResult]]:
    """pair -> row -> the paired 95 % interval of (row − the pair's best row, or
    ``reference``), on the seeds where every row of the rule ran (pairs without two such
    seeds are left out)."""
    out = {}
    for pair, runs in chosen.items():
        seeds = rule_seeds(runs)
        if len(seeds) < 2:
            continue
        table = {row: scores(runs, row, seeds) for row in RULE_ROWS}
        best = reference or max(RULE_ROWS, key=lambda row: statistics.fmean(table[row]))
        out[pair] = {
            row: stats.paired_t([a - b for a, b in zip(table[row], table[best])])
            for row in RULE_ROWS
        }
    return out


def recommended(
    diffs: dict[str, dict[str, stats.PairedResult]],
    costs: dict[str, dict[str, float]],
    rows: tuple[str, ...] = RULE_ROWS,
) -> tuple[str | None, bool]:
    """(row, by the fallback): the cheapest of ``rows`` (mean one-run cost over the priced
    pairs) whose interval to the reference row of ``diffs`` reaches zero or above on every
    pair; if none does, the fallback: the row with the smallest worst shortfall to a pair's
    reference (mean points, the largest over the pairs, compared at 2 decimals), the
    cheaper on a tie."""
    priced = [c for c in costs.values() if c]
    if not (diffs and priced):
        return None, False

    def cost(row: str) -> float:
        return statistics.fmean(c[row] for c in priced)

    ok = [row for row in rows if all(d[row].high >= 0 for d in diffs.values())]
    if ok:
        return min(ok, key=cost), False

    def worst(row: str) -> float:
        return round(max(-d[row].mean for d in diffs.values()), 2)

    return min(rows, key=lambda row: (worst(row), cost(row))), True


def verdict_lines(
    chosen: Chosen,
    pairs: list[str],
    labels: dict[str, str],
    costs: dict[str, dict[str, float]] | None = None,
) -> list[str]:
    """The report's section: the target's verdict, the rule's table and its choice;
    ``costs``: pair -> row -> one-run cost (default: the measured ones, `pair_costs`)."""
    labels = {**labels, RECIPE_ROW: POOLED}
    status, per_pair = target(chosen, pairs, labels)
    diffs = candidates(chosen)
    if costs is None:
        costs = {pair: pair_costs(pair) or {} for pair in pairs}
    word = {"met": "**met**", "missed": "**missed**", "open": "not decided yet"}[status]
    lines = [
        "### Issue 34's verdict and recommendation (the registered rules, computed)",
        "",
        f"Target (docs/quality.md): {word}.",
        "",
        *per_pair,
        "",
        "The recommendation rule: per pair, each row − the row with the best mean test top-1 "
        "(paired 95 % t-interval over the seeds where every row ran); a row qualifies where "
        "the interval reaches zero or above on every pair; the cheapest qualifying row (mean "
        "one-run cost in ReviewKD runs over the priced pairs) is recommended.",
        "",
        "| row | one run (ReviewKD runs) | "
        + " | ".join(f"{p} ({d[RECIPE_ROW].n} seeds)" for p, d in diffs.items())
        + " | qualifies |",
        "|---|---|" + "---|" * len(diffs) + "---|",
    ]
    priced = [c for c in costs.values() if c]
    for row in RULE_ROWS:
        one = f"{statistics.fmean(c[row] for c in priced):.2f}" if priced else "–"
        cells = [
            f"{d[row].mean:+.2f} [{d[row].low:+.2f}, {d[row].high:+.2f}]" for d in diffs.values()
        ]
        ok = "yes" if diffs and all(d[row].high >= 0 for d in diffs.values()) else "no"
        lines.append(f"| {labels.get(row, row)} | {one} | " + " | ".join(cells) + f" | {ok} |")
    return [*lines, *choice_lines(chosen, pairs, labels, costs, status, diffs), ""]


def choice_lines(
    chosen: Chosen,
    pairs: list[str],
    labels: dict[str, str],
    costs: dict[str, dict[str, float]],
    status: str,
    diffs: dict[str, dict[str, stats.PairedResult]],
) -> list[str]:
    """The recommendation: by the rule (or its fallback); if the target is met, the frozen
    recipe first and the budget option, the cheapest other row not worse than it. "So far"
    while a pair has fewer than every seed of every row."""
    short = [p for p in pairs if p not in diffs or diffs[p][RECIPE_ROW].n < SEEDS]
    so_far = f" (so far: {', '.join(short)} without every row on every seed)" if short else ""
    if status == "met":
        others = tuple(r for r in RULE_ROWS if r != RECIPE_ROW)
        budget, _ = recommended(candidates(chosen, RECIPE_ROW), costs, others)
        name = labels.get(budget, budget) if budget else "none"
        return ["", f"Recommendation{so_far}: the frozen recipe first; budget option: {name}."]
    choice, fallback = recommended(diffs, costs)
    name = labels.get(choice, choice) if choice else "none yet"
    how = (
        " — by the fallback: no row is within its interval of the best on every pair, so the "
        "row with the smallest worst shortfall to a pair's best"
        if fallback
        else ""
    )
    return ["", f"Recommendation by the rule{so_far}: **{name}**{how}."]
