"""The search levers of issue 12 (warm start, several held-out batches per step, smoothed
replay) and the search diagnostics, each against an independent computation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_module
from hypergradient_reference import _batches, _unrolled_hypergradient
from test_search import _search_fit

from distpro_lightning import DistillationProcess, ProcessFileError, ProcessScheduleCallback
from distpro_lightning.search.diagnostics import (
    cosine,
    held_out_loss_after_update,
    moving_fraction,
    summarize,
)
from distpro_lightning.search.heldout import concat_batches
from distpro_lightning.search.hypergradient import SearchBatches, SGDHyper


def test_concat_batches_keeps_structure():
    a = (torch.zeros(2, 3), {"y": torch.zeros(2)})
    b = (torch.ones(3, 3), {"y": torch.ones(3)})
    x, d = concat_batches([a, b])
    assert x.shape == (5, 3) and d["y"].tolist() == [0, 0, 1, 1, 1]
    assert concat_batches([a]) is a
    assert concat_batches([[torch.zeros(1)], [torch.ones(1)]])[0].tolist() == [0, 1]
    with pytest.raises(TypeError, match="val_batches_per_step=1"):
        concat_batches(["a", "b"])


def test_several_held_out_batches_equal_unrolled_autograd_on_their_union():
    torch.manual_seed(0)
    m = make_module().double()
    m.train()
    m.alpha_logits.copy_(torch.rand(m.num_pathways, dtype=torch.float64) * 2)
    train, val_a = _batches(seed=0, dtype=torch.float64)
    _, val_b = _batches(seed=1, dtype=torch.float64)
    union = concat_batches([val_a, val_b])
    expected = _unrolled_hypergradient(m, train, union, lr=0.1)
    from distpro_lightning import ProcessSearchCallback

    got = ProcessSearchCallback(hypergradient="exact").hypergradient_of(m, train, union, lr=0.1)
    assert (got - expected).norm() / expected.norm() < 1e-4


def test_search_draws_val_batches_per_step(tmp_path):
    _, cb, _, _ = _search_fit(tmp_path, steps=2, val_batches_per_step=3)
    per_cycle = len(cb.held_out.indices()) // cb.held_out.batch_size
    assert cb.held_out.cycle * per_cycle + cb.held_out.consumed == 2 * 3
    from distpro_lightning import ProcessSearchCallback

    with pytest.raises(ValueError, match="val_batches_per_step must be >= 1"):
        ProcessSearchCallback(schedule={"val_batches_per_step": 0})


def test_warm_start_begins_at_the_files_last_row(tmp_path):
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    _, first, _, _ = _search_fit(first_dir, steps=4)
    source = DistillationProcess.load(first_dir / "process.json")
    _, second, rows, _ = _search_fit(
        second_dir, steps=2, warmup_steps=1, init_process=str(first_dir / "process.json")
    )
    # with one warm-up step the first recorded row is the starting point itself
    assert torch.equal(second.process.logits[0], source.final())
    assert torch.equal(rows.alpha_at_step[0], source.final())
    assert second.process.provenance["init_process"]["fingerprint"] == source.fingerprint()
    # a process of other pathways is refused, naming both
    other = source.like([f"x{i}" for i in range(source.num_pathways)], source.logits)
    other.save(tmp_path / "other.json")
    with pytest.raises(ProcessFileError, match="other pathways than the module"):
        _search_fit(tmp_path / "c", steps=1, init_process=str(tmp_path / "other.json"))


def test_warm_start_remaps_a_reordered_file_and_refuses_another_weighting(tmp_path):
    first_dir = tmp_path / "a"
    _, first, _, _ = _search_fit(first_dir, steps=3)
    source = DistillationProcess.load(first_dir / "process.json")
    order = list(reversed(range(source.num_pathways)))
    names = [source.pathway_names[i] for i in order]
    reordered = DistillationProcess(
        names, source.normalization, source.logits[:, order], provenance=source.provenance
    )
    reordered.save(tmp_path / "reordered.json")
    with pytest.warns(UserWarning, match="warmup_steps=1 covers the whole fit"):
        _, second, _, _ = _search_fit(
            tmp_path / "b", steps=1, warmup_steps=1, init_process=str(tmp_path / "reordered.json")
        )
    assert torch.equal(second.process.logits[0], source.final())  # by name, not by position
    for key, value in (("name", "softmax"), ("bias", 3.0), ("scale", 1.0)):
        other = DistillationProcess(
            source.pathway_names, {**source.normalization, key: value}, source.logits
        )
        other.save(tmp_path / f"{key}.json")
        with pytest.raises(ProcessFileError, match=f"another weighting \\({key}"):
            _search_fit(tmp_path / key, steps=1, init_process=str(tmp_path / f"{key}.json"))


def test_warm_start_docs_say_the_file_is_matched_by_name():
    # the test above: a reordered file starts by name; the docstring must not ask for one order
    from distpro_lightning.search.state import warm_start

    doc = " ".join(warm_start.__doc__.split())
    assert "same order" not in doc and "in any order" in doc and "by pathway name" in doc


def test_smoothed_is_a_centred_moving_average():
    rows = torch.arange(12.0).reshape(6, 2) ** 2
    p = DistillationProcess(["a", "b"], {"name": "softmax"}, rows)
    got = p.smoothed(3).logits
    for t in range(6):  # independent loop with replicated ends
        idx = [min(max(t + d, 0), 5) for d in (-1, 0, 1)]
        assert torch.allclose(got[t], rows[idx].mean(0))
    assert torch.equal(p.smoothed(1).logits, rows)
    with pytest.raises(ProcessFileError, match="odd number"):
        p.smoothed(2)


def test_replay_of_a_smoothed_process(tmp_path):
    m = make_module()
    rows = torch.randn(9, m.num_pathways)
    p = DistillationProcess(m.pathway_names, {"name": "biased_softmax", "scale": 27.0}, rows)
    cb = ProcessScheduleCallback(process=p, smooth_steps=5, plot=False)
    replayed = cb.check(m)
    assert torch.allclose(replayed.logits, p.smoothed(5).logits)
    with pytest.raises(ValueError, match="smooth_steps must be an odd number"):
        ProcessScheduleCallback(process=p, smooth_steps=4)


def test_held_out_loss_after_update_matches_a_manual_sgd_step():
    torch.manual_seed(0)
    m = make_module().double()
    m.train()
    (x, y), (xv, yv) = _batches(dtype=torch.float64)
    logits = torch.rand(m.num_pathways, dtype=torch.float64)
    batches = SearchBatches(x, y, m.teacher_outputs(x), xv, yv)
    virtual = {k: SGDHyper(lr=0.1) for k in m.search_parameters().student}
    got = held_out_loss_after_update(m, batches, virtual, logits)
    # independent: a copy, one torch.optim.SGD step on the student only, then the loss
    ref = copy.deepcopy(m)
    opt = torch.optim.SGD(ref.student.parameters(), lr=0.1)
    out, losses = ref.pathway_forward(x, ref.teacher_outputs(x), ref.active_pathways(logits))
    (F.cross_entropy(out, y) + (ref.alpha_weights(logits) * losses).sum()).backward()
    opt.step()
    with torch.no_grad():
        expected = F.cross_entropy(ref.student(xv), yv).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_diagnostics_fit_records_rows_in_the_process(tmp_path):
    _, cb, _, trainer = _search_fit(tmp_path, steps=5, diagnostics_every_n_steps=2)
    saved = DistillationProcess.load(tmp_path / "process.json")
    rows = saved.provenance["diagnostics"]["rows"]
    assert [r["step"] for r in rows] == [0, 2, 4]
    assert rows[0]["successive"] is None and rows[1]["successive"] is not None
    for r in rows:
        assert -1.0 <= r["agreement"] <= 1.0 and math.isfinite(r["val_loss_new"])
    assert "search/diag_agreement" in trainer.callback_metrics
    summary = summarize(saved)
    assert summary["diagnosed_steps"] == 3 and 0.0 <= summary["helps_fraction"] <= 1.0
    # the diagnosis changed nothing the search recorded: same rows as without it
    _, plain, _, _ = _search_fit(tmp_path / "plain", steps=5)
    assert torch.equal(plain.process.logits, cb.process.logits)


def test_cosine_and_moving_fraction():
    assert cosine(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0])) == pytest.approx(1.0)
    assert cosine(torch.zeros(2), torch.ones(2)) == 0.0
    assert math.isnan(cosine(torch.tensor([float("nan"), 1.0]), torch.ones(2)))
    t = torch.arange(50.0).unsqueeze(1)
    drift = torch.cat([t * 0.01, t * -0.02], 1)
    assert moving_fraction(drift) == 1.0
    g = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, (400, 200), generator=g).float() * 2 - 1
    jitter = (0.01 * signs).cumsum(0)
    assert moving_fraction(jitter) < 0.15  # about 5 % of pure walks clear 2 sigma


def test_run_settings_record_every_option_that_shapes_a_search_and_a_change_warns():
    """The process file tells apart searches that differ only in their run options, and a
    resume that changes one says so, applies it and records the change."""
    import warnings as _warnings

    from distpro_lightning.process.core import DistillationProcess
    from distpro_lightning.search.checks import SearchRunOptions
    from distpro_lightning.search.state import record_run_settings

    options = SearchRunOptions(
        warmup_steps=2, search_every_n_steps=3, seed=7, val_batches_per_step=2,
        held_out="val", proxy=True,
    )  # fmt: skip
    record = options.record(max_non_finite_steps=5)
    assert record == {
        "warmup_steps": 2, "search_every_n_steps": 3, "held_out_seed": 7,
        "val_batches_per_step": 2, "held_out": "val", "max_non_finite_steps": 5, "proxy": True,
    }  # fmt: skip
    process = DistillationProcess(["a", "b"], {"name": "softmax"}, logits=torch.zeros(4, 2))
    record_run_settings(process, record)
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        record_run_settings(process, record)  # the same on resume: nothing said
    assert not caught
    changed = {**record, "val_batches_per_step": 4, "held_out_seed": 8}
    with pytest.warns(UserWarning, match=r"val_batches_per_step 2 -> 4.*held_out_seed 7 -> 8|"
                      r"held_out_seed 7 -> 8.*val_batches_per_step 2 -> 4"):  # fmt: skip
        record_run_settings(process, changed)
    assert process.provenance["run_settings"] == changed
    assert process.provenance["settings_changes"] == [
        {"step": 4, "changed": {"held_out_seed": [7, 8], "val_batches_per_step": [2, 4]}}
    ]


# A NaN fed on purpose makes the search say several things at once; each case asserts its
# own message, and every message here is asserted where it is tested alone (test_guard,
# test_search_levers, test_search_bad_inputs' other cases)
@pytest.mark.filterwarnings("ignore:DistPro search. non-finite hypergradient:UserWarning")
@pytest.mark.filterwarnings("ignore:DistPro search skipped:UserWarning")
def test_a_non_finite_held_out_sample_with_diagnostics_never_loses_the_search(tmp_path):
    """Issue 37, case 1: one NaN held-out sample made a diagnostic NaN, and the file (strict
    JSON) could not be written, neither by the periodic save nor by the save on exception."""
    from search_cases import digits, search
    from torch.utils.data import DataLoader, TensorDataset

    dm = digits(subset=128)
    dm.setup("fit")
    xv, yv = next(iter(DataLoader(dm.search_val_dataset, batch_size=32)))
    xv[3] = float("nan")  # one bad held-out sample: one of the two held-out batches
    dm.search_val_dataloader = lambda: DataLoader(TensorDataset(xv, yv), batch_size=16)
    with pytest.warns(UserWarning, match=r"Search diagnostics of step \d+: .*non-finite"):
        cb, _, _ = search(
            tmp_path, steps=6, dm=dm, save_path=str(tmp_path / "s.json"),
            diagnostics_every_n_steps=1, save_every_n_steps=1,
        )  # fmt: skip
    saved = DistillationProcess.load(tmp_path / "s.json")
    assert len(saved) == 6  # every row written
    rows = saved.provenance["diagnostics"]["rows"]
    flagged = [r for r in rows if r["non_finite"]]
    assert flagged and all(r[k] is None for r in flagged for k in r["non_finite"])
    assert summarize(saved)["diagnosed_steps"] == len(rows)  # nulls are left out of means


def test_provenance_never_blocks_saving_rows(tmp_path):
    process = DistillationProcess(
        ["a", "b"], {"name": "softmax"}, [[0.0, 1.0]],
        provenance={"search_val_loss": float("nan"), "odd": {1, 2}},
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"provenance.search_val_loss, provenance.odd held"):
        process.save(tmp_path / "p.json")
    saved = DistillationProcess.load(tmp_path / "p.json")
    assert saved.provenance["search_val_loss"] is None and len(saved) == 1
