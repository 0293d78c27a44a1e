"""Issue 34's recipe choice, frozen before any run of its rows: the selection table of
every search variant of ours in the issue-20 evidence file, by the one rule every method
of issue 34 is tuned with (mean validation top-1 over the grid seeds 0 and 1), averaged
over the two pairs so that one recipe serves both; a variant not run on both pairs is
listed and not eligible (a choice cannot rest on one pair).

    python -m benchmarks.freeze_recipe  # -> benchmarks/results/frozen_recipe.md
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.converged_methods import DERIVED, PAIRS
from distpro_lightning.files import atomic_write_text

SOURCE = Path("benchmarks/results/evidence_fmnist.json")
OUT = Path("benchmarks/results/frozen_recipe.md")
RULE_SEEDS = (0, 1)
# our searched recipes (a replay of a search's process; alpha_T and the controls made from
# a process are not recipes a user runs)
CANDIDATES = [m for m in DERIVED if m.startswith("distpro") and m != "distpro_smooth"]


def scores(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """method -> pair -> mean validation top-1 over `RULE_SEEDS` (complete pairs only)."""
    out: dict[str, dict[str, float]] = {}
    for method in CANDIDATES:
        for pair in list(PAIRS)[:2]:
            vals = {r["seed"]: r["val_top1"] for r in records
                    if r.get("kind") == "run" and r["method"] == method and r["pair"] == pair}  # fmt: skip
            if all(s in vals for s in RULE_SEEDS):
                out.setdefault(method, {})[pair] = statistics.mean(vals[s] for s in RULE_SEEDS)
    return out


def table(by_method: dict[str, dict[str, float]]) -> tuple[list[str], str]:
    pairs = list(PAIRS)[:2]
    eligible = {m: statistics.mean(v.values()) for m, v in by_method.items() if len(v) == 2}
    chosen = max(eligible, key=lambda m: eligible[m])
    lines = [
        f"| variant | {' | '.join(pairs)} | mean of the pairs | eligible |",
        "|---|---|---|---|---|",
    ]
    order = sorted(by_method, key=lambda m: -eligible.get(m, -1.0))
    for m in order:
        cells = [f"{100 * by_method[m][p]:.2f}" if p in by_method[m] else "–" for p in pairs]
        mean = f"{100 * eligible[m]:.2f}" if m in eligible else "–"
        mark = "**chosen**" if m == chosen else ("yes" if m in eligible else "no: one pair")
        lines.append(f"| {m} | {' | '.join(cells)} | {mean} | {mark} |")
    return lines, chosen


def main() -> int:
    records = json.loads(SOURCE.read_text())["records"]
    lines, chosen = table(scores(records))
    text = "\n".join([
        "# Issue 34: the frozen recipe and its selection table",
        "",
        f"Made by `python -m benchmarks.freeze_recipe` from `{SOURCE}` (issue 20's records), "
        "before any run of issue 34's rows. Rule (the same for every method of issue 34): "
        f"mean validation top-1 over seeds {', '.join(map(str, RULE_SEEDS))}; one recipe for "
        "both pairs, so the two pairs' means are averaged; a variant run on one pair only is "
        "not eligible. Validation top-1 %:",
        "",
        *lines,
        "",
        f"Frozen recipe: **{chosen}**.",
        "",
    ])  # fmt: skip
    atomic_write_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
