"""Issue 34's headline of the converged protocol: the frozen recipe pooled over its three
independent searches against the tuned rivals, on every pair, with paired intervals, a
cluster bootstrap over searches and seeds, and Holm's adjustment over the headline family
(recipe - tuned Hinton KD, - tuned ReviewKD, - tuned fixed combination, on every pair).

The recipe's score on a seed is the mean over its searches' replays on that seed; a
difference to a rival is that minus the rival's run on the same seed (paired), with a
t-interval over the seeds; the bootstrap resamples searches and seeds (both sources of
variance). Statistics: `distpro_lightning.functional.stats`."""

from __future__ import annotations

import statistics
from typing import Any

from distpro_lightning.functional import stats

RECIPE = ("distpro_review", "distpro_review_s2", "distpro_review_s3")
FAMILY = ("hinton_kd", "reviewkd", "fixed_review")  # Holm's family, on every pair
OTHERS = ("student", "equal", "uniform_review", "alpha_T_review", "distpro_cheap_review")
OTHERS += ("distpro_review_half", "transfer_review")
# issue 34's levers -> their recipe in recipe_cost's `evaluated` (priced in `ISSUE34_COST`);
# rows of their own table (`versus_lines`), never of the headline
LEVERS = {"distpro_review_mean": "review_mean", "distpro_review_val4": "review_val4"}
LEVERS |= {"distpro_review_fromfixed": "review_fromfixed"}
# a lever that starts from another row's tuned point -> that row (it pays its tuning grid)
STARTS_FROM = {"distpro_review_fromfixed": "fixed_review"}
LEVER_RIVALS = ("fixed_review", "reviewkd", "hinton_kd", "uniform_review")
POOLED = "frozen recipe (3 searches pooled)"
VERSUS = ("distpro_review_half", "transfer_review", *LEVERS)  # rows set against the rivals


def recipe_table(runs: dict[str, dict[int, dict]], seeds: list[int]) -> list[list[float]]:
    """``[search][seed]`` test top-1 (points) of the frozen recipe's replays."""
    return [[100 * runs[m][s]["top1"] for s in seeds] for m in RECIPE]


def complete_seeds(runs: dict[str, dict[int, dict]], rival: str) -> list[int]:
    """The seeds on which all three searches' replays and ``rival`` ran."""
    common = set(runs.get(rival, {}))
    for m in RECIPE:
        common &= set(runs.get(m, {}))
    return sorted(common)


def comparison(runs: dict[str, dict[int, dict]], rival: str) -> dict[str, Any] | None:
    seeds = complete_seeds(runs, rival)
    if len(seeds) < 2:
        return None
    table = recipe_table(runs, seeds)
    rival_pts = [100 * runs[rival][s]["top1"] for s in seeds]
    per_seed = [statistics.fmean(col) - r for col, r in zip(zip(*table), rival_pts)]
    boot = stats.cluster_bootstrap([[x - r for x, r in zip(row, rival_pts)] for row in table])
    return {"seeds": seeds, "per_seed": per_seed, "t": stats.paired_t(per_seed), "boot": boot}


Chosen = dict[str, dict[str, dict[int, dict]]]  # pair -> method -> seed -> run


def comparisons(chosen: Chosen) -> list[tuple[str, str, dict[str, Any]]]:
    """(pair, rival, `comparison`) of every rival with at least two common seeds."""
    rows = []
    for pair, runs in chosen.items():
        for rival in (*FAMILY, *OTHERS):
            if rival in runs and (result := comparison(runs, rival)) is not None:
                rows.append((pair, rival, result))
    return rows


def holm_family(chosen: Chosen) -> dict[tuple[str, str], tuple[float, stats.PairedResult]]:
    """(pair, rival) of the headline family -> Holm's adjusted p-value and the paired
    interval at the level Holm tests it at."""
    rows = [(pair, rival, r) for pair, rival, r in comparisons(chosen) if rival in FAMILY]
    p_values = [r["t"].p_value for _, _, r in rows]
    out = {}
    for (pair, rival, r), p, level in zip(rows, stats.holm(p_values), stats.holm_levels(p_values)):
        out[(pair, rival)] = (p, stats.paired_t(r["per_seed"], level))
    return out


def headline_lines(chosen: Chosen, labels: dict[str, str]) -> list[str]:
    """The headline table over every pair in ``chosen`` (pair -> method -> seed -> run)."""
    rows = comparisons(chosen)
    if not rows:
        return ["Issue 34 headline: the frozen recipe's three searches have not all been "
                "replayed yet.", ""]  # fmt: skip
    adjusted = holm_family(chosen)
    family = [r for r in rows if r[1] in FAMILY]
    lines = [
        "### Issue 34 headline: the frozen recipe (3 searches pooled) − each rival",
        "",
        "Per seed, the mean test top-1 of the three searches' replays minus the rival's run "
        "(points); paired 95 % t-interval over the seeds; a cluster bootstrap over searches "
        "and seeds (10,000 draws); for the headline family (tuned Hinton KD, ReviewKD and "
        f"fixed combination on every pair, {len(family)} comparisons so far) Holm's adjusted "
        "p-value and the interval at the level Holm tests it at.",
        "",
        "| pair | rival | seeds | recipe − rival | 95 % t-interval | bootstrap 95 % | Holm p | Holm-adjusted interval |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for pair, rival, r in rows:
        t, (_, blo, bhi) = r["t"], r["boot"]
        holm_p, holm_iv = "–", "–"
        if (pair, rival) in adjusted:
            p, at = adjusted[(pair, rival)]
            holm_p = f"{p:.3f}"
            holm_iv = f"[{at.low:+.2f}, {at.high:+.2f}] ({100 * at.level:.2f} %)"
        lines.append(
            f"| {pair} | {labels.get(rival, rival)} | {len(r['seeds'])} | {t.mean:+.2f} "
            f"| [{t.low:+.2f}, {t.high:+.2f}] | [{blo:+.2f}, {bhi:+.2f}] | {holm_p} | {holm_iv} |"
        )
    return [*lines, ""]


# the measured step costs that price each row (benchmarks/recipe_cost.py --pairs recommended,
# resnet20 -> resnet8, this machine); other pairs are priced when measured there
# (file, its entry); pairs 2 and 3: `python -m benchmarks.recipe_cost --pairs
# wrn_16_2-mobilenet_v2 wrn_40_2-shufflenet_v1 --rounds 5 --out <that file>`
ISSUE34_COST = "benchmarks/results/recipe_cost_issue34.json"
# the compiled replay's prices (`recipe_cost --compiled-replay`): pair -> its entry there
COMPILED_COST = "benchmarks/results/recipe_cost_compiled.json"
COMPILED_KEYS = {"resnet20-resnet8": "recommended"}
# rows whose replay computes what a compiled recipe of that file computes: the unpruned
# replay ("uniform": the uniform space, and the fixed combination, which prunes nothing)
COMPILED_ROWS = {"uniform_review": "uniform", "fixed_review": "uniform"}
COMPILED_ROWS |= {"distpro_cheap_review": "cheap_review"}
COST_FILES = {
    "resnet20-resnet8": ("benchmarks/results/recipe_cost_recommended.json", "recommended"),
    "wrn_16_2-mobilenet_v2": (
        "benchmarks/results/recipe_cost_issue34.json",
        "wrn_16_2-mobilenet_v2",
    ),
    "wrn_40_2-shufflenet_v1": (
        "benchmarks/results/recipe_cost_issue34.json",
        "wrn_40_2-shufflenet_v1",
    ),
}


def run_costs(cost: dict[str, Any]) -> dict[str, float]:
    """One run of each row in ReviewKD runs of the same length: a replay's step over
    ReviewKD's; a searched recipe its search (k, fraction of the replay's steps) plus its
    replay (`benchmarks.recipe_cost`); the half-epoch row its whole search plus half a
    replay; the transfer row a replay only (the source pair's search is not paid again).
    The levers: `lever_costs`."""
    step, evaluated = cost["step_s"], cost["evaluated"]
    review = step["reviewkd"]
    full = evaluated["review"]
    return {
        "hinton_kd": step["hinton_kd"] / review,
        "reviewkd": 1.0,
        "fixed_review": step["replay"] / review,
        "uniform_review": step["replay"] / review,
        "alpha_T_review": full["over_reviewkd"],  # its search is paid to get alpha_T
        "distpro_review": full["over_reviewkd"],
        "distpro_cheap_review": evaluated["cheap_review"]["over_reviewkd"],
        "distpro_review_half": (step["search_k1"] + 0.5 * step[full["replay"]]) / review,
        "transfer_review": step[full["replay"]] / review,
    }


def _entry(path: str, key: str, root: Any) -> dict[str, Any] | None:
    import json
    from pathlib import Path

    file = Path(root) / path
    return json.loads(file.read_text())["pairs"].get(key) if path and file.is_file() else None


def lever_costs(pair: str, root: Any = ".") -> dict[str, float]:
    """The levers' one-run costs on ``pair`` (each its own recipe: the mean of three
    searches pays the three), from `ISSUE34_COST`'s entry for the pair where it prices
    them; the frozen rows keep their own measurement (`COST_FILES`)."""
    entry = _entry(ISSUE34_COST, pair, root) or {}
    evaluated = entry.get("evaluated", {})
    return {m: evaluated[n]["over_reviewkd"] for m, n in LEVERS.items() if n in evaluated}


def compiled_costs(pair: str, root: Any = ".") -> dict[str, float]:
    """One run of each row whose replay prunes nothing, with the replay's heads compiled
    (`COMPILED_ROWS`), where `COMPILED_COST` prices ``pair``; a pruned replay compiles
    again for every new pattern, so it has no compiled price."""
    entry = _entry(COMPILED_COST, COMPILED_KEYS.get(pair, pair), root) or {}
    compiled = entry.get("compiled", {})
    return {m: compiled[n]["over_reviewkd"] for m, n in COMPILED_ROWS.items() if n in compiled}


def pair_costs(pair: str, root: Any = ".") -> dict[str, float] | None:
    """Every row's one-run cost on ``pair`` (`run_costs` of its `COST_FILES` entry and the
    `lever_costs`), or ``None`` if the pair is unmeasured."""
    entry = _entry(*COST_FILES.get(pair, ("", "")), root)
    return None if entry is None else run_costs(entry) | lever_costs(pair, root)


def cost_lines(
    pair: str,
    grid_runs: dict[str, int],
    labels: dict[str, str],
    root: Any = ".",
    ran: set[str] | None = None,
) -> list[str]:
    """Each row's single-run cost and its total compute with its tuning grid (the grid's
    points x the grid seeds, the runs the one selection rule needs; a `STARTS_FROM` lever
    pays the grid of the row it starts from, then its own run), in ReviewKD runs;
    ``ran``: the methods with runs on the pair (others, such as the transfer row on its
    source pair, are left out)."""
    path = COST_FILES.get(pair, ("", ""))[0]
    costs = pair_costs(pair, root)
    if costs is None:
        return [f"Cost ({pair}): not measured on this pair yet.", ""]
    costs = {m: c for m, c in costs.items() if ran is None or m in ran}
    compiled = compiled_costs(pair, root)
    labels = {**labels, "distpro_review": "frozen recipe (one search and its replay)"}
    levers = f"; the levers: `{ISSUE34_COST}`" if path != ISSUE34_COST else ""
    lines = [
        f"Cost ({pair}; `{path}`{levers}; compiled: `{COMPILED_COST}`): one run, and the "
        "total with its tuning grid, in ReviewKD runs of the same length (a grid's total: "
        "its points × the grid seeds × one run); the last column prices a replay that "
        "prunes nothing with its heads compiled (`compile_heads: true`), where measured.",
        "",
        "| row | one run | tuning runs | total with tuning | one run, compiled replay |",
        "|---|---|---|---|---|",
    ]
    for method, one in costs.items():
        n = grid_runs.get(method, 0)
        total = one * n if n else one
        if method in STARTS_FROM and STARTS_FROM[method] in costs:  # pays that row's grid
            n = grid_runs.get(STARTS_FROM[method], 0)
            total = one + costs[STARTS_FROM[method]] * n
        fast = f"{compiled[method]:.2f}" if method in compiled else "–"
        lines.append(
            f"| {labels.get(method, method)} | {one:.2f} | {n or '–'} | {total:.2f} | {fast} |"
        )
    missing = [labels.get(m, m) for m in LEVERS if m not in costs and (ran is None or m in ran)]
    if missing:
        lines += ["", f"Not priced yet: {'; '.join(missing)} (`python -m benchmarks.recipe_cost "
                  f"--pairs {pair} --rounds 5 --out {ISSUE34_COST}` once their processes exist)."]  # fmt: skip
    return [*lines, ""]


def versus_lines(chosen: Chosen, labels: dict[str, str]) -> list[str]:
    """Issue 34's half-epoch and transfer rows (the paper's Fig. 5 and Table 3 claims: a row
    at half the epochs, or without a search, against the rivals at full length) and its
    levers, each against the tuned rivals, the uniform space and the frozen recipe (pooled):
    row − rival per seed, paired 95 % t-intervals, unadjusted (outside the headline family;
    the levers are exploratory rows registered after the frozen ones)."""
    rows = []
    for pair, runs in chosen.items():
        for lever in VERSUS:
            for rival in (*LEVER_RIVALS, "recipe"):
                seeds = sorted(set(runs.get(lever, {})) & set(complete_seeds(runs, lever)))
                if rival != "recipe":
                    seeds = [s for s in seeds if s in runs.get(rival, {})]
                if len(seeds) < 2:
                    continue
                mine = [100 * runs[lever][s]["top1"] for s in seeds]
                if rival == "recipe":
                    theirs = [statistics.fmean(col) for col in zip(*recipe_table(runs, seeds))]
                else:
                    theirs = [100 * runs[rival][s]["top1"] for s in seeds]
                t = stats.paired_t([a - b for a, b in zip(mine, theirs)])
                name = POOLED if rival == "recipe" else labels.get(rival, rival)
                rows.append(
                    f"| {pair} | {labels.get(lever, lever)} | {name} | {len(seeds)} "
                    f"| {t.mean:+.2f} | [{t.low:+.2f}, {t.high:+.2f}] |"
                )
    if not rows:
        return []
    return [
        "### Issue 34's half-epoch, transfer and lever rows − the rivals (unadjusted, outside "
        "the headline family)",
        "",
        "| pair | row | rival | seeds | row − rival | 95 % t-interval |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
