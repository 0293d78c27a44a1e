"""The numbers quoted in README.md and docs/benchmarks.md are the committed results files'.

Every quality row quoted in the same format as the scripts' Markdown must be a row that
``benchmarks/quality.py`` produces from the committed JSON, and every step-cost number must
be the committed JSON's, rounded as printed; so a re-run that is committed without updating
the docs (or a hand-edited number) fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = [ROOT / "README.md", ROOT / "docs" / "benchmarks.md"]


def _quality_files() -> list[Path]:
    return sorted(
        p for p in RESULTS.glob("fashion_mnist_*.json") if "runs" in json.loads(p.read_text())
    )


@pytest.mark.parametrize("path", _quality_files(), ids=lambda p: p.stem)
def test_quality_markdown_is_the_json_summary(path):
    payload = json.loads(path.read_text())
    from benchmarks import quality

    expected = quality.report_text(payload, path.stem)
    assert path.with_suffix(".md").read_text() == expected


def test_quoted_quality_rows_match_the_results():
    from benchmarks import quality

    rows: set[str] = set()
    pairs: set[str] = set()
    for path in _quality_files():
        payload = json.loads(path.read_text())
        pairs |= {r["pair"] for r in payload["runs"]}
        rows |= {
            line
            for line in quality.summarize(payload["runs"], "", [], None).splitlines()
            if line.startswith("| ") and not line.startswith("| pair")
        }
    quoted = 0
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            if any(line.startswith(f"| {pair} |") for pair in pairs):
                quoted += 1
                assert line in rows, f"{doc.name}: {line!r} is not in the committed results"
    assert quoted >= 10


def test_docs_quality_plots_are_the_results_plots():
    for img in (ROOT / "docs" / "img").glob("quality_*.png"):
        source = RESULTS / f"fashion_mnist_{img.stem.removeprefix('quality_')}.png"
        assert img.read_bytes() == source.read_bytes(), f"{img} is not a copy of {source}"


STEP_ROWS = {
    "plain student (CE)": "plain",
    "Hinton KD": "hinton_kd",
    "ReviewKD": "reviewkd",
    "DistPro retrain, 27 pathways": "distpro_retrain",
    "DistPro retrain, 11 active (pruned)": "distpro_retrain_pruned",
    "DistPro retrain, pruned (11 of 27 active)": "distpro_retrain_pruned",
    "search step, finite differences": "search_fd",
    "DistPro search step (finite differences)": "search_fd",
    "search step, FD, its own forward": "search_fd_own_forward",
    "search step, forward differences": "search_forward_difference",
    "DistPro search step (forward differences)": "search_forward_difference",
    "search step, exact JVP": "search_exact",
    "DistPro search step (exact JVP)": "search_exact",
    "search step, FD, reusing the training gradient": "search_fd_reuse",
    "search step, forward differences, reusing the training gradient": (
        "search_forward_difference_reuse"
    ),
}
RATIO_ROWS = {
    "`search_over_floor`": "search_over_floor",
    "`retrain_over_reviewkd` (pruned)": "retrain_over_reviewkd",
    "retrain unpruned / ReviewKD": "retrain_unpruned_over_reviewkd",
    "search / retrain": "search_over_retrain",
    "search, forward differences / retrain": "search_forward_difference_over_retrain",
    "search with gradient reuse / retrain": "search_reuse_over_retrain",
    "search, forward differences with reuse / retrain": (
        "search_forward_difference_reuse_over_retrain"
    ),
    "`search_over_kd`": "search_over_kd",
    "`exact_search_over_kd`": "exact_search_over_kd",
    "search with gradient reuse / search": "search_reuse_over_search",
    "search with its own forward / search": "search_own_forward_over_search",
    "`peak_memory_search_over_kd`": "peak_memory_search_over_kd",
    "`peak_memory_search_over_retrain`": "peak_memory_search_over_retrain",
    "FLOPs, retrain unpruned / ReviewKD": "flops_retrain_unpruned_over_reviewkd",
    "FLOPs, search / retrain": "flops_search_over_retrain",
    "FLOPs, search with forward differences / retrain": "flops_forward_difference_over_retrain",
    "FLOPs, search with gradient reuse / retrain": "flops_reuse_over_retrain",
    "FLOPs, search with forward differences and reuse / retrain": (
        "flops_forward_difference_reuse_over_retrain"
    ),
}
#: The H200 table (the previous version of the script) quotes step_cost_h200.json.
GPU_STEP_ROWS = {f"H200: {k}": v for k, v in STEP_ROWS.items()}
GPU_RATIO_ROWS = {f"H200: {k}": v for k, v in RATIO_ROWS.items()}


def _rounds_to(text: str, value: float) -> bool:
    """``text`` is ``value`` rounded to the decimals ``text`` shows."""
    decimals = len(text.partition(".")[2])
    return f"{value:.{decimals}f}" == text


def _cells(line: str) -> list[str]:
    return [c.strip().strip("*") for c in line.strip().strip("|").split("|")]


def _check_table_line(cells: list[str], cpu: dict, gpu: dict) -> bool:
    """Check one table row against the results; whether it was a quoted row."""
    if cells[0] in STEP_ROWS and cells[1].split()[0].isdigit():
        assert cells[1].split()[0] == f"{1000 * cpu['median_s'][STEP_ROWS[cells[0]]]:.0f}"
    elif cells[0] in RATIO_ROWS:
        assert _rounds_to(cells[1], cpu[RATIO_ROWS[cells[0]]])
    elif cells[0] in GPU_STEP_ROWS:
        assert cells[1] == f"{1000 * gpu['median_s'][GPU_STEP_ROWS[cells[0]]]:.1f}"
    elif cells[0] in GPU_RATIO_ROWS:
        assert _rounds_to(cells[1], gpu[GPU_RATIO_ROWS[cells[0]]])
    else:
        return False
    return True


def test_quoted_step_costs_match_the_results():
    cpu = json.loads((RESULTS / "step_cost.json").read_text())
    gpu = json.loads((RESULTS / "step_cost_h200.json").read_text())
    checked = 0
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            cells = _cells(line) if line.startswith("|") else []
            if cells and len(cells) > 1:
                try:
                    checked += _check_table_line(cells, cpu, gpu)
                except AssertionError as err:
                    raise AssertionError(f"{doc.name}: {line!r}") from err
    assert checked >= 30
    # README's ratio column quotes the CPU ratios.
    readme = (ROOT / "README.md").read_text()
    for key in ("search_over_floor", "retrain_over_reviewkd"):
        assert f"{cpu[key]:.2f} ×" in readme, key
    assert re.search(rf"{cpu['search_over_kd']:.1f} × KD", readme)


FIT_ROWS = {
    "Hinton KD (recipe)": "hinton_kd",
    "ReviewKD (recipe)": "reviewkd",
    "DistPro retrain, 27 pathways (replay callback)": "distpro_retrain",
    "DistPro retrain, pruned (replay callback)": "distpro_retrain_pruned",
    "DistPro search, finite differences (search callback)": "search_fd",
    "DistPro search, FD, its own forward": "search_fd_own_forward",
    "DistPro search, forward differences": "search_forward_difference",
    "DistPro search, exact JVP (search callback)": "search_exact",
    "DistPro search, FD, reusing the training gradient": "search_fd_reuse",
    "DistPro search, forward differences, reusing the training gradient": (
        "search_forward_difference_reuse"
    ),
}
OFFICIAL_ROWS = {
    "this library, DistPro retrain (replay callback)": "distpro_retrain",
    "this library, DistPro search (search callback)": "search_fd",
    "this library, DistPro search, forward differences": "search_forward_difference",
}
FIT_RATIO_ROWS = {
    "`official_search_over_retrain`": "official_search_over_retrain",
    "`official_search_forward_difference_over_retrain`": (
        "official_search_forward_difference_over_retrain"
    ),
    "`fit_search_over_retrain`": "fit_search_over_retrain",
    "`fit_search_own_forward_over_retrain`": "fit_search_own_forward_over_retrain",
    "`fit_search_forward_difference_over_retrain`": "fit_search_forward_difference_over_retrain",
    "`fit_search_reuse_over_retrain`": "fit_search_reuse_over_retrain",
    "`fit_search_forward_difference_reuse_over_retrain`": (
        "fit_search_forward_difference_reuse_over_retrain"
    ),
    "`fit_retrain_over_reviewkd` (pruned)": "fit_retrain_over_reviewkd",
    "`fit_retrain_unpruned_over_reviewkd`": "fit_retrain_unpruned_over_reviewkd",
}


def test_quoted_fit_costs_match_the_results():
    """The Trainer.fit tables quote the committed CPU results (ms, rounded as printed)."""
    cpu = json.loads((RESULTS / "step_cost.json").read_text())
    checked = 0
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            cells = _cells(line) if line.startswith("|") else []
            for rows, part in ((FIT_ROWS, "fit"), (OFFICIAL_ROWS, "official_pair")):
                if cells and cells[0] in rows:
                    value = cpu[part]["median_s"][rows[cells[0]]]
                    assert cells[1].split()[0] == f"{1000 * value:.0f}", (doc.name, line)
                    checked += 1
            if cells and cells[0] in FIT_RATIO_ROWS:
                assert _rounds_to(cells[1], cpu[FIT_RATIO_ROWS[cells[0]]]), line
                checked += 1
    assert checked >= 20


EVIDENCE = RESULTS / "evidence_fmnist.json"
#: README's evidence tables, one per pair, each after a ``<!-- evidence: PAIR -->`` marker:
#: README label -> the report's label (benchmarks/converged_report.py)
README_EVIDENCE = {
    "resnet20-resnet8": {
        "**DistPro, search space with the KD and ReviewKD pathways** (recommended)": (
            "lever: search space with the ReviewKD and KD pathways"
        ),
        "DistPro, search space with the KD pathway": "lever: search space with the KD pathway",
        "**cheap recipe, recommended space** (25 % proxy, alpha every 4th step; 1.91 × a "
        "ReviewKD run)": (
            "cheap recipe, recommended space: 25 % proxy search, alpha every 4th step, stretched"
        ),
        "cheap recipe, recommended space, alpha every step (25 % proxy; 2.15 ×)": (
            "cheap recipe, recommended space: 25 % proxy search, stretched"
        ),
        "cheap recipe, recommended space, 10 % proxy (alpha every 4th step; 1.83 ×)": (
            "cheap recipe, recommended space: 10 % proxy search, alpha every 4th step, stretched"
        ),
        "control: the recommended space at its uniform start, no search (1.32 ×)": (
            "control: recommended space at the search's uniform start, no search"
        ),
        "Hinton KD (tuned: w = 4, T = 4)": "Hinton KD",
        "ReviewKD (tuned: w = 4)": "ReviewKD",
        "use alpha_T (the 9-pathway search's final weights, fixed)": "use alpha_T",
        "DistPro, 9 feature pathways only": "DistPro (searched process)",
        "equally weighted (tuned: w = 4)": "equally weighted",
        "control: a random process": "control: random process",
        "cheap recipe of the 9-pathway search (25 % proxy, every 4th step)": (
            "cheap recipe: 25 % proxy search, alpha every 4th step, stretched"
        ),
        "student alone": "student alone (CE)",
    },
    "wrn_16_2-mobilenet_v2": {
        "**DistPro, search space with the KD and ReviewKD pathways, 10× alpha lr** (recommended)": "lever: search space with the ReviewKD and KD pathways, 10x alpha lr",
        "DistPro, search space with the KD pathway": "lever: search space with the KD pathway",
        "DistPro, search space with the KD and ReviewKD pathways": "lever: search space with the ReviewKD and KD pathways",
        "cheap recipe, recommended space, alpha every step (25 % proxy)": "cheap recipe, recommended space: 25 % proxy search, stretched",
        "DistPro, search space with the KD and ReviewKD pathways, 3× alpha lr": "lever: search space with the ReviewKD and KD pathways, 3x alpha lr",
        "cheap recipe, recommended space (25 % proxy, alpha every 4th step)": "cheap recipe, recommended space: 25 % proxy search, alpha every 4th step, stretched",
        "cheap recipe, recommended space, 10 % proxy (alpha every 4th step)": "cheap recipe, recommended space: 10 % proxy search, alpha every 4th step, stretched",
        "ReviewKD (tuned: w = 4)": "ReviewKD",
        "Hinton KD (tuned: w = 0.5, T = 4)": "Hinton KD",
        "control: the recommended space at its uniform start, no search": "control: recommended space at the search's uniform start, no search",
        "DistPro, 9 feature pathways only": "DistPro (searched process)",
        "control: a random process": "control: random process",
        "use alpha_T (the 9-pathway search's final weights, fixed)": "use alpha_T",
        "cheap recipe of the 9-pathway search (25 % proxy, every 4th step)": "cheap recipe: 25 % proxy search, alpha every 4th step, stretched",
        "equally weighted (tuned: w = 1)": "equally weighted",
        "student alone": "student alone (CE)",
        "alpha_T of the search with the KD and ReviewKD pathways (its final weights, fixed)": "lever: alpha_T of the search with the ReviewKD and KD pathways",
        "alpha_T of the search with the KD pathway (its final weights, fixed)": "lever: alpha_T of the search with the KD pathway",
    },
}


#: README evidence labels that quote a recipe's cost: label -> its `evaluated_cost` entry
README_COSTS = {
    "**cheap recipe, recommended space** (25 % proxy, alpha every 4th step; 1.91 × a "
    "ReviewKD run)": "cheap_review",
    "cheap recipe, recommended space, alpha every step (25 % proxy; 2.15 ×)": "proxy_review",
    "cheap recipe, recommended space, 10 % proxy (alpha every 4th step; 1.83 ×)": "cheap10_review",
    "control: the recommended space at its uniform start, no search (1.32 ×)": None,
}


def test_readme_evidence_labels_quote_each_recipes_own_cost():
    """A cost in a README label is the recipe's own (priced with its own process)."""
    labels = [row[0] for pair in README_EVIDENCE for row in _readme_table(pair)]
    for label, name in README_COSTS.items():
        assert label in labels, label
        quoted = re.search(r"([0-9.]+) ×", label).group(1)
        assert _rounds_to(quoted, evaluated_cost(name)["over_reviewkd"]), label


def test_evidence_report_is_the_json_summary():
    from benchmarks import converged_report

    payload = json.loads(EVIDENCE.read_text())
    expected = converged_report.report_text(payload, EVIDENCE.stem)
    assert EVIDENCE.with_suffix(".md").read_text() == expected


def _report_rows(pair: str) -> tuple[str, dict[str, list[str]]]:
    """The report's recommended recipe and method table for ``pair``, by method label."""
    report = EVIDENCE.with_suffix(".md").read_text()
    section = report.split(f"### {pair}")[1].split("###")[0]
    recommended = re.search(r"among our variants\): \*\*(.+?)\*\*", section)
    assert recommended, pair
    cells = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in section.splitlines()
        if line.startswith("| ") and len(line.split(" | ")) == 8  # the method table
    }  # fmt: skip
    return recommended.group(1), cells


def _readme_table(pair: str) -> list[list[str]]:
    """The rows of README's evidence table that follows ``<!-- evidence: pair -->``."""
    text = (ROOT / "README.md").read_text()
    marker = f"<!-- evidence: {pair} -->"
    assert marker in text, f"README has no evidence table for {pair}"
    lines = text.split(marker)[1].lstrip("\n").splitlines()
    table = []
    for line in lines:
        if not line.startswith("|"):
            break
        table.append([p.strip() for p in line.strip().strip("|").split(" | ")])
    return table[2:]  # past the header and the rule


@pytest.mark.parametrize("pair", sorted(README_EVIDENCE))
def test_readme_evidence_table_quotes_the_report(pair):
    """Every row of README's evidence table for ``pair`` is the report's row for that
    method (test top-1, the recommended − method interval, and a tuned setting named in
    the label), and the row marked recommended is the report's recommended recipe."""
    recommended, cells = _report_rows(pair)
    mapping = README_EVIDENCE[pair]
    rows = _readme_table(pair)
    assert [r[0] for r in rows] == list(mapping), "README rows differ from the mapping"
    for label, test, diff in rows:
        row = cells[mapping[label]]
        assert test.strip("*") == row[3].strip(), (label, row[3])
        assert diff.replace("−", "-") == row[5].strip(), (label, row[5])
        assert ("(recommended)" in label) == (mapping[label] == recommended), label
        tuned = re.search(r"tuned: (.+?)\)", label)
        if tuned:
            assert tuned.group(1).replace(" ", "") == row[1].strip().replace(" ", ""), label


#: docs/cost.md's recipe rows: label -> the key in recipe_cost.json's ``recipes``
COST_ROWS = {
    "full search (k=1, f=1) + replay (unpruned)": "k1_f1_replay",
    "full search (k=1, f=1) + pruned replay": "k1_f1_replay_pruned",
    "k=4, f=1 + pruned replay": "k4_f1_replay_pruned",
    "k=1, f=0.25 + pruned replay": "k1_f0.25_replay_pruned",
    "**k=4, f=0.25 + pruned replay** (the cheap recipe)": "k4_f0.25_replay_pruned",
    "k=1, f=0.1 + pruned replay": "k1_f0.1_replay_pruned",
    "k=8, f=0.1 + pruned replay": "k8_f0.1_replay_pruned",
}


def _cost_numbers(cell: str) -> tuple[str, str]:
    """``'**1.39 × (4.7 ×)**'`` or ``'5.11 × ReviewKD (17.2 × KD)'`` -> ``('1.39', '4.7')``."""
    words = cell.replace("*", "").replace("(", " ").split()
    numbers = [w for w in words if w[0].isdigit()]
    return numbers[0], numbers[1]


def test_cost_page_recipes_quote_the_recipe_cost_json():
    """Every recipe row of docs/cost.md is the committed benchmark's ratio to a ReviewKD and
    a Hinton KD run, rounded as shown, for each pair column."""
    pairs = json.loads((RESULTS / "recipe_cost.json").read_text())["pairs"]
    checked = 0
    for line in (ROOT / "docs" / "cost.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 3 or cells[0] not in COST_ROWS:
            continue
        for cell, pair in zip(cells[1:], ("project", "official")):
            row = pairs[pair]["recipes"][COST_ROWS[cells[0]]]
            over_review, over_kd = _cost_numbers(cell)
            assert _rounds_to(over_review, row["over_reviewkd"]), (cells[0], pair)
            assert _rounds_to(over_kd, row["over_hinton_kd"]), (cells[0], pair)
            checked += 1
    assert checked == 2 * len(COST_ROWS)


#: docs/cost.md's recommended-space grid (the full search's pruned replay): label -> the
#: key in recipe_cost_recommended.json's ``recipes``
RECOMMENDED_COST_ROWS = {
    "full search (k=1, f=1) + replay (unpruned)": "k1_f1_replay",
    "full search (k=1, f=1) + pruned replay": "k1_f1_replay_pruned",
    "k=4, f=1 + pruned replay": "k4_f1_replay_pruned",
    "k=1, f=0.25 + pruned replay": "k1_f0.25_replay_pruned",
    "k=4, f=0.25 + pruned replay": "k4_f0.25_replay_pruned",
    "k=1, f=0.1 + pruned replay": "k1_f0.1_replay_pruned",
    "k=8, f=0.1 + pruned replay": "k8_f0.1_replay_pruned",
}

#: docs/cost.md's evaluated recipes, each with its own process: label -> the entry in
#: recipe_cost_recommended.json's ``evaluated`` (``None``: no search, the unpruned replay)
EVALUATED_COST_ROWS = {
    "full search (k=1, f=1) + its pruned replay (`distpro_review`)": "review",
    "25 % proxy, alpha every step + its replay (`distpro_proxy_review`)": "proxy_review",
    "25 % proxy, alpha every 4th step + its replay (`distpro_cheap_review`)": "cheap_review",
    "10 % proxy, alpha every 4th step + its replay (`distpro_cheap10_review`)": "cheap10_review",
    "no search: the space held at uniform weights (`uniform_review`)": None,
}


def _recommended_cost() -> dict:
    return json.loads((RESULTS / "recipe_cost_recommended.json").read_text())["pairs"][
        "recommended"
    ]


def evaluated_cost(name: str | None) -> dict[str, float]:
    """An evaluated recipe's cost (``None``: the replay alone, no search), with the share
    of pathway-steps its process prunes."""
    result = _recommended_cost()
    if name is not None:
        return result["evaluated"][name]
    step = result["step_s"]
    return {
        "over_reviewkd": step["replay"] / step["reviewkd"],
        "over_hinton_kd": step["replay"] / step["hinton_kd"],
        "pruned_pathway_steps": 0.0,
    }


def test_cost_page_recommended_space_quotes_its_json():
    recipes = _recommended_cost()["recipes"]
    text = (ROOT / "docs" / "cost.md").read_text().split("### The recommended space")[1]
    checked = 0
    for line in text.split("## ")[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 3 and cells[0] in EVALUATED_COST_ROWS:
            row = evaluated_cost(EVALUATED_COST_ROWS[cells[0]])
            assert cells[1] == f"{100 * row['pruned_pathway_steps']:.0f} %", cells[0]
            cells = [cells[0], cells[2]]
        elif len(cells) == 2 and cells[0] in RECOMMENDED_COST_ROWS:
            row = recipes[RECOMMENDED_COST_ROWS[cells[0]]]
        else:
            continue
        over_review, over_kd = _cost_numbers(cells[1])
        assert _rounds_to(over_review, row["over_reviewkd"]), cells[0]
        assert _rounds_to(over_kd, row["over_hinton_kd"]), cells[0]
        checked += 1
    assert checked == len(RECOMMENDED_COST_ROWS) + len(EVALUATED_COST_ROWS)


#: docs/cost.md's accuracy table of the recommended space: label -> (method, its entry in
#: recipe_cost_recommended.json's ``evaluated``, `evaluated_cost`)
CHEAP_QUALITY_ROWS = {
    "full search (k=1, f=1) + its pruned replay": ("distpro_review", "review"),
    "25 % proxy, alpha every step (`distpro_proxy_review`)": (
        "distpro_proxy_review", "proxy_review",
    ),
    "25 % proxy, alpha every 4th step (`distpro_cheap_review`)": (
        "distpro_cheap_review", "cheap_review",
    ),
    "10 % proxy, alpha every 4th step (`distpro_cheap10_review`)": (
        "distpro_cheap10_review", "cheap10_review",
    ),
    "no search: the space at its uniform start (`uniform_review`)": ("uniform_review", None),
}  # fmt: skip


def test_cost_page_cheap_recipes_quote_the_paired_protocol():
    """The accuracy of each cheap recipe of the recommended space on resnet20 -> resnet8,
    and its paired difference to the full search, as the results file gives them; its cost
    as the recipe benchmark gives it."""
    from benchmarks import converged_report as report

    runs = report.chosen_runs(json.loads(EVIDENCE.read_text())["records"], "resnet20-resnet8")
    text = (ROOT / "docs" / "cost.md").read_text().split("## What the cheap recipes lose")[1]
    checked = 0
    for line in text.split("## ")[0].splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 4 or cells[0] not in CHEAP_QUALITY_ROWS:
            continue
        method, cost = CHEAP_QUALITY_ROWS[cells[0]]
        assert len(runs[method]) == 5, method
        assert _rounds_to(cells[1].split()[0], evaluated_cost(cost)["over_reviewkd"]), cells[0]
        assert cells[2] == report.pct([r["top1"] for r in runs[method].values()]), cells[0]
        if method != "distpro_review":
            diff = report.diff_text(runs[method], runs["distpro_review"])
            assert cells[3].replace("−", "-") == diff, (cells[0], diff)
        checked += 1
    assert checked == len(CHEAP_QUALITY_ROWS)


#: paired differences README quotes in its text (resnet20 -> resnet8): (method, baseline,
#: the phrase around ``{diff}``); a baseline ``"hinton_kd@w=2,T=4"`` is Hinton KD at its
#: original grid's choice, whose seeds 2-4 the widened grid superseded
README_PAIRED = [
    ("distpro_review", "uniform_review", "the full search adds {diff}"),
    ("distpro_cheap_review", "uniform_review", "the cheap recipe {diff}"),
    ("distpro_cheap_review", "distpro_review", "({diff} against the full search)"),
    ("distpro_cheap_review", "hinton_kd", "beats tuned Hinton KD by {diff}"),
    ("distpro_cheap_review", "hinton_kd@w=2,T=4", "({diff} against the original grid's choice)"),
    ("distpro_cheap_review", "reviewkd", "tuned ReviewKD by {diff}"),
    ("distpro", "equal", "DistPro beats equal weights ({diff})"),
    ("distpro", "hinton_kd", "ReviewKD and Hinton KD ({diff})"),
    ("distpro", "hinton_kd@w=2,T=4", "**lost to Hinton KD** ({diff})"),
]


def _original_choice(payload: dict, method: str, point: str) -> dict[int, dict]:
    """``method``'s runs at ``point`` on every seed, superseded ones included."""
    from benchmarks.converged_grids import params_key

    return {
        r["seed"]: r for r in [*payload["records"], *payload.get("superseded", [])]
        if r.get("pair") == "resnet20-resnet8" and r.get("method") == method
        and params_key(r["params"]) == point
    }  # fmt: skip


#: paired differences docs/cost.md quotes in its text (resnet20 -> resnet8), as README_PAIRED
COST_PAIRED = [
    ("distpro_review", "uniform_review", "the full search {diff}"),
    ("distpro_cheap_review", "uniform_review", "the cheap recipe {diff}"),
]


#: ... and docs/quality.md
QUALITY_PAIRED = [
    ("distpro_review", "uniform_review", "The full search adds {diff} to that start"),
    ("distpro_cheap_review", "uniform_review", "the cheap recipe {diff}"),
    ("distpro_cheap10_review", "uniform_review", "the 10 % proxy {diff}"),
    ("distpro_cheap10_review", "distpro_review", "the full search ({diff})"),
]


#: ... for wrn_16_2 -> mobilenet_v2 (README and docs/quality.md)
#: ... the README's three-line answer, for wrn_16_2 -> mobilenet_v2
PAIR2_PAIRED = [
    ("distpro_review", "hinton_kd", "beats tuned Hinton KD by {diff}"),
    ("distpro_review", "equal", "equal weights by {diff}"),
    ("distpro_review", "random", "the random process by {diff}"),
    ("distpro_review", "uniform_review", "uniform start by {diff}"),
    ("distpro_review", "reviewkd", "ties tuned ReviewKD ({diff})"),
    ("distpro_cheap_review", "hinton_kd", "ties Hinton KD and ReviewKD ({diff},"),
    ("distpro_cheap_review", "reviewkd", "{diff}) and trails the full search"),
    ("distpro_cheap_review", "distpro_review", "({diff}; the 10 % proxy"),
    ("distpro_cheap10_review", "distpro_review", "the 10 % proxy {diff})"),
    ("distpro_review_lr10", "hinton_kd", "10× alpha lr ties tuned Hinton KD ({diff})"),
    ("distpro_review_lr10", "reviewkd", "and tuned ReviewKD ({diff})"),
    ("distpro_review_lr10", "distpro_review", "and the full search at the base alpha lr ({diff})"),
    ("distpro_review_lr3", "distpro_review", "trails the base-lr search (3× - base: {diff})"),
    ("distpro_review_lr10", "distpro_review_lr3", "ties the 10× one (10× - 3×: {diff})"),
]


#: ... and docs/cost.md, for wrn_16_2 -> mobilenet_v2
COST_PAIRED_2 = [
    ("distpro_cheap_review", "distpro_review", "interval includes zero ({diff})"),
    ("distpro_cheap10_review", "distpro_review", "is significantly below ({diff})"),
    ("distpro_review", "hinton_kd", "the full search beats Hinton KD by {diff}"),
]

#: what docs/cost.md says of each difference it quotes on wrn_16_2 -> mobilenet_v2: the
#: phrase before the quoted difference, and the verdict its 95 % interval must give
COST_VERDICTS_2 = [
    ("distpro_cheap_review", "distpro_review", "interval includes zero", "includes zero"),
    ("distpro_cheap10_review", "distpro_review", "is significantly below", "below"),
]


@pytest.mark.parametrize(
    "doc, quotes, pair",
    [
        ("README.md", README_PAIRED, "resnet20-resnet8"),
        ("docs/cost.md", COST_PAIRED, "resnet20-resnet8"),
        ("docs/quality.md", QUALITY_PAIRED, "resnet20-resnet8"),
        ("README.md", PAIR2_PAIRED, "wrn_16_2-mobilenet_v2"),
        ("docs/quality.md", PAIR2_PAIRED, "wrn_16_2-mobilenet_v2"),
        ("docs/cost.md", COST_PAIRED_2, "wrn_16_2-mobilenet_v2"),
    ],
)
def test_paired_differences_quoted_in_text_are_the_results(doc, quotes, pair):
    from benchmarks import converged_report as report

    payload = json.loads(EVIDENCE.read_text())
    runs = report.chosen_runs(payload["records"], pair)
    text = " ".join((ROOT / doc).read_text().replace("−", "-").split())
    for method, base, phrase in quotes:
        name, _, point = base.partition("@")
        other = _original_choice(payload, name, point) if point else runs[name]
        assert len(other) == 5, base
        quoted = phrase.format(diff=report.diff_text(runs[method], other))
        assert quoted in text, quoted


def test_cost_page_calls_a_difference_significant_only_where_its_interval_excludes_zero():
    from benchmarks import converged_report as report

    payload = json.loads(EVIDENCE.read_text())
    runs = report.chosen_runs(payload["records"], "wrn_16_2-mobilenet_v2")
    text = " ".join((ROOT / "docs" / "cost.md").read_text().replace("−", "-").split())
    for method, base, phrase, verdict in COST_VERDICTS_2:
        a, b = runs[method], runs[base]
        seeds = sorted(set(a) & set(b))
        _, lo, hi = report.paired_interval([100 * (a[s]["top1"] - b[s]["top1"]) for s in seeds])
        assert verdict == ("below" if hi < 0 else "above" if lo > 0 else "includes zero"), method
        quoted = f"{phrase} ({report.diff_text(a, b)})"
        assert quoted in text, quoted


#: docs/cost.md's compiled-replay rows: label -> the entry in recipe_cost_compiled.json
COMPILED_COST_ROWS = {
    "25 % proxy, alpha every 4th step (`distpro_cheap_review`)": "cheap_review",
    "10 % proxy, alpha every 4th step (`distpro_cheap10_review`)": "cheap10_review",
    "no search: the space held at uniform weights (`uniform_review`)": "uniform",
}


def test_cost_page_compiled_replay_rows_quote_their_json():
    rows = json.loads((RESULTS / "recipe_cost_compiled.json").read_text())
    rows = rows["pairs"]["recommended"]["compiled"]
    text = (ROOT / "docs" / "cost.md").read_text()
    table = text.split("| recipe, recommended space, compiled replay |")[1].split("\n\n")[0]
    checked = 0
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 2 and cells[0] in COMPILED_COST_ROWS:
            over_review, over_kd = _cost_numbers(cells[1])
            row = rows[COMPILED_COST_ROWS[cells[0]]]
            assert _rounds_to(over_review, row["over_reviewkd"]), cells[0]
            assert _rounds_to(over_kd, row["over_hinton_kd"]), cells[0]
            checked += 1
    assert checked == len(COMPILED_COST_ROWS)


def test_quality_quotes_the_kd_pathway_ramp_of_the_committed_processes():
    """docs/quality.md's KD-pathway weights at the start and the end of each shared search
    with the KD pathway are those of the committed process files."""
    from distpro_lightning import DistillationProcess

    def kd(pair: str, variant: str) -> tuple[str, str]:
        path = EVIDENCE.parent / "evidence_fmnist" / f"process_{pair}_shared_{variant}.json"
        process = DistillationProcess.load(path)
        column = process.weights()[:, process.pathway_names.index("logits->logits:kd")]
        return f"{float(column[0]):.2f}", f"{float(column[-1]):.2f}"

    text = " ".join((ROOT / "docs" / "quality.md").read_text().split())
    p2, p2r = kd("wrn_16_2-mobilenet_v2", "kd"), kd("wrn_16_2-mobilenet_v2", "review")
    p1, p1r = kd("resnet20-resnet8", "kd"), kd("resnet20-resnet8", "review")
    assert f"weight from {p2[0]} at the start to {p2[1]} at the end" in text
    assert f"(the ReviewKD+KD search: {p2r[0]} to {p2r[1]};" in text
    assert f"on the first pair {p1[0]} to {p1[1]} and {p1r[1]})" in text


PAIRS12 = ("resnet20-resnet8", "wrn_16_2-mobilenet_v2")


def test_readme_quotes_issue_34s_finished_pair_as_its_report_says():
    """The README's issue-34 sentence: each rival's difference and interval as the
    frozen headline table of benchmarks/results/reviewer_fmnist.md gives them, and the
    costs from its cost table."""
    report = (ROOT / "benchmarks" / "results" / "reviewer_fmnist.md").read_text()
    readme = " ".join((ROOT / "README.md").read_text().replace("−", "-").split())
    rows = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 8 and cells[2] == "5":
            rows[(cells[0], cells[1])] = f"{cells[3]} {cells[4]}"
    fixed = "fixed combination of the recommended space (tuned weights)"
    for pair, rival, phrase in (
        ("resnet20-resnet8", "Hinton KD", "resnet20 → resnet8: tuned Hinton KD {}"),
        ("resnet20-resnet8", "ReviewKD", "tuned ReviewKD {} (after Holm"),
        ("resnet20-resnet8", fixed, "combination of its own space {}, a tie"),
        ("wrn_16_2-mobilenet_v2", "Hinton KD", "mobilenet_v2: tuned Hinton KD {}"),
        ("wrn_16_2-mobilenet_v2", fixed, "the tuned fixed combination {} (here"),
        ("wrn_16_2-mobilenet_v2", "ReviewKD", "but **tuned ReviewKD {}: ReviewKD wins**"),
    ):
        assert phrase.format(rows[(pair, rival)]) in readme, (pair, rival, rows[(pair, rival)])
    control = "control: recommended space at the search's uniform start, no search"
    trails = [rows[(pair, control)].split()[0].lstrip("+") for pair in PAIRS12]
    assert "trails the search by {} (pair 1) and {} points (pair 2)".format(*trails) in readme
    margins = [rows[(pair, "ReviewKD")].split()[0] for pair in PAIRS12]
    assert (
        "on pair 1 by {} before Holm's adjustment, behind it on pair 2 by {})".format(*margins)
        in readme
    )
    verdict = report.split("### Issue 34's verdict")[1]
    assert "Target (docs/quality.md): **missed**." in verdict
    assert "**ReviewKD** — by the fallback" in verdict
    assert "points to **tuned ReviewKD, no search**" in readme
    assert "the issue's target is **missed**, finally" in readme
    holm = next(
        c
        for c in (line.strip("|").split("|") for line in report.splitlines())
        if len(c) == 8 and c[0].strip() == "resnet20-resnet8" and c[1].strip() == "ReviewKD"
    )
    assert holm[7].strip().startswith("[-")  # "after Holm ... no longer clears zero"
    half = "frozen recipe (first search) replayed over half the epochs"
    quoted = []
    for pair in ("resnet20-resnet8", "wrn_16_2-mobilenet_v2"):
        line = next(
            line
            for line in report.splitlines()
            if line.startswith(f"| {pair} | {half} | ReviewKD |")
        )
        cells = [c.strip() for c in line.strip("|").split("|")]
        quoted.append(f"{cells[4]} {cells[5]}")
    assert "trails tuned ReviewKD at 30 by {} (pair 1) and {} (pair 2)".format(*quoted) in readme
    costs = {}
    for line in report.split("Cost (resnet20-resnet8;")[1].splitlines()[3:12]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5:
            costs[cells[0]] = cells
    fixed = costs["fixed combination of the recommended space (tuned weights)"][3]
    search = costs["frozen recipe (one search and its replay)"][3]
    assert f"grid costs {fixed} ReviewKD runs in all, the search and its replay {search}" in readme
