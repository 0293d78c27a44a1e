"""ProcessScheduleCallback: replay of a searched process in real (short) fits on digits."""

from __future__ import annotations

from pathlib import Path

import conftest
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from distpro_lightning import (
    DistillationProcess,
    DistProModule,
    ProcessFileError,
    ProcessScheduleCallback,
)
from distpro_lightning.data.digits import DigitsDataModule

BATCHES_PER_EPOCH = 4  # subset=256, batch_size=64


def make_module(**overrides) -> DistProModule:
    return conftest.make_module(**{"teacher": "resnet8", "transforms": ["conv_bn"], **overrides})


def make_dm() -> DigitsDataModule:
    return DigitsDataModule(batch_size=64, subset=256)


def make_trainer(callbacks, **overrides) -> Trainer:
    overrides = {"limit_val_batches": 0, "num_sanity_val_steps": 0, **overrides}
    return conftest.quiet_trainer(callbacks=callbacks, **overrides)


def make_process(names, t_search: int = 5, shift: float = 0.0, **norm) -> DistillationProcess:
    """Distinct, varying rows: column i runs linearly between two column-specific values."""
    p = len(names)
    start = torch.linspace(-2.0, 2.0, p)
    end = torch.linspace(3.0, -1.5, p) + shift
    u = torch.linspace(0.0, 1.0, t_search).unsqueeze(1)
    # A non-linear bend in every other column so that wrong interpolation weights show up.
    bend = torch.sin(3.0 * u) * torch.tensor([(-1.0) ** i for i in range(p)])
    logits = (1 - u) * start + u * end + bend
    normalization = {"name": "biased_softmax", "bias": 1.0, "scale": float(p)}
    normalization.update(norm)
    return DistillationProcess(names, normalization, logits=logits)


class Recorder(Callback):
    """Records (global_step, batch_idx, logits) inside training_step and after each batch."""

    def __init__(self) -> None:
        self.inside: list[tuple[int, int, torch.Tensor]] = []
        self.after: list[torch.Tensor] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        original = type(pl_module).training_step

        def training_step(batch, batch_idx):
            self.inside.append(
                (pl_module.global_step, batch_idx, pl_module.alpha_logits.detach().clone())
            )
            return original(pl_module, batch, batch_idx)

        pl_module.training_step = training_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after.append(pl_module.alpha_logits.detach().clone())

    @property
    def steps(self) -> list[int]:
        return [s for s, _, _ in self.inside]


def fit(module, callbacks, recorder=None, ckpt_path=None, **trainer_kwargs):
    recorder = recorder or Recorder()
    trainer = make_trainer([*callbacks, recorder], **trainer_kwargs)
    trainer.fit(module, datamodule=make_dm(), ckpt_path=ckpt_path)
    return trainer, recorder


def assert_never_trained(module: DistProModule, rec: Recorder) -> None:
    assert "alpha_logits" in dict(module.named_buffers())
    assert "alpha_logits" not in dict(module.named_parameters())
    assert not module.alpha_logits.requires_grad
    # Whatever the step did (forward, backward, optimizer), the logits are unchanged after it.
    assert len(rec.after) == len(rec.inside)
    for (_, _, inside), after in zip(rec.inside, rec.after):
        assert torch.equal(inside, after)


# --------------------------------------------------------------------------- modes
@pytest.mark.parametrize("length", [{"max_steps": 10}, {"max_epochs": 2}])
def test_mode_process_sets_interpolated_logits_at_every_step(length) -> None:
    module = make_module()
    process = make_process(module.pathway_names)
    cb = ProcessScheduleCallback(process=process, mode="process")
    trainer, rec = fit(module, [cb], **length)
    total = trainer.estimated_stepping_batches
    assert total == length.get("max_steps", 2 * BATCHES_PER_EPOCH)
    assert rec.steps == list(range(total))
    for step, _, logits in rec.inside:
        assert torch.equal(logits, process.at(step, total)), step
    # The first and last steps are exactly the first and last searched rows, and an
    # intermediate step lies strictly between rows (not a copy of any row).
    assert torch.equal(rec.inside[0][2], process.logits[0])
    assert torch.equal(rec.inside[-1][2], process.logits[-1])
    if total == 10:
        u = 1 * 4 / 9
        expected = (1 - u) * process.logits[0] + u * process.logits[1]
        torch.testing.assert_close(rec.inside[1][2], expected, rtol=0, atol=1e-6)
        assert not any(torch.equal(rec.inside[1][2], r) for r in process.logits)
    assert_never_trained(module, rec)
    assert torch.equal(module.alpha_logits, process.logits[-1])
    assert len(cb._replayed) == total
    assert module.normalization == "biased_softmax"


def test_mode_process_from_a_file(tmp_path: Path) -> None:
    module = make_module()
    process = make_process(module.pathway_names, t_search=3)
    f = tmp_path / "process.json"
    process.save(f)
    cb = ProcessScheduleCallback(process=str(f), mode="process")
    trainer, rec = fit(module, [cb], max_steps=6)
    assert rec.steps == list(range(6))
    for step, _, logits in rec.inside:
        assert torch.equal(logits, process.at(step, 6))


def test_mode_final_uses_last_row_everywhere() -> None:
    module = make_module()
    process = make_process(module.pathway_names)
    cb = ProcessScheduleCallback(process=process, mode="final")
    trainer, rec = fit(module, [cb], max_steps=6)
    assert rec.steps == list(range(6))
    last = process.logits[-1]
    assert not torch.equal(last, process.logits[0])
    for _, _, logits in rec.inside:
        assert torch.equal(logits, last)
    assert_never_trained(module, rec)


def test_mode_uniform_says_it_does_not_use_a_given_process(tmp_path: Path) -> None:
    """The CLI's ablation ``--replay.mode uniform`` on a config that names a process: said,
    and the file is not even read (a missing one does not fail)."""
    with pytest.warns(UserWarning, match=r"mode='uniform'.*does not use process=\.\.\."):
        cb = ProcessScheduleCallback(process=str(tmp_path / "gone.json"), mode="uniform")
    assert cb.source is None
    module = make_module()
    fit(module, [cb], max_steps=1)
    assert module.normalization == "uniform"


def test_a_pathway_map_that_is_neither_dict_nor_position_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"pathway_map must be a dict .* got 'positions'"):
        ProcessScheduleCallback(process=make_process(["a", "b"]), pathway_map="positions")


def test_mode_uniform_weights_every_pathway_equally() -> None:
    module = make_module(kd_weight=0.5)
    p = module.num_pathways
    assert module.normalization == "biased_softmax"
    cb = ProcessScheduleCallback(process=None, mode="uniform")
    trainer, rec = fit(module, [cb], max_steps=5)
    assert module.normalization == "uniform"
    assert module.weight_scale == pytest.approx(p * 0.5)
    w = module.alpha_weights()
    torch.testing.assert_close(w, torch.full((p,), 0.5), rtol=0, atol=1e-6)
    # Constant in the logits, whatever they are.
    w2 = module.alpha_weights(torch.linspace(-5.0, 5.0, p))
    torch.testing.assert_close(w2, torch.full((p,), 0.5), rtol=0, atol=1e-6)
    assert rec.steps == list(range(5))
    for _, _, logits in rec.inside:
        assert torch.equal(logits, torch.ones(p))
    assert_never_trained(module, rec)


@pytest.mark.parametrize(
    "given", [{"pathway_map": "position"}, {"strict": False}, {"smooth_steps": 3}]
)
def test_mode_uniform_says_the_replay_settings_it_does_not_use(given) -> None:
    [name] = given
    with pytest.warns(UserWarning, match=rf"\({name}=\.\.\.\) has no effect with mode='uniform'"):
        ProcessScheduleCallback(mode="uniform", **given)


def test_mode_uniform_refuses_a_threshold_that_prunes_every_pathway() -> None:
    """Equal weights hold every logit at 1.0: tau >= 1 would prune them all (the search
    refuses the same); below 1 it prunes nothing."""
    module = make_module(prune_threshold=1.0)
    with pytest.raises(ValueError, match=r"prune_threshold=1.0 .* prunes every pathway"):
        fit(module, [ProcessScheduleCallback(mode="uniform")], max_steps=1)
    module = make_module(prune_threshold=0.5)
    fit(module, [ProcessScheduleCallback(mode="uniform")], max_steps=1)
    assert module.active_pathways() == [True] * module.num_pathways


def test_process_mode_needs_a_process() -> None:
    with pytest.raises(ValueError, match="needs a process file"):
        ProcessScheduleCallback(process=None, mode="process")
    with pytest.raises(ValueError, match="needs a process file"):
        ProcessScheduleCallback(process=None, mode="final")
    with pytest.raises(ValueError, match="mode must be"):
        ProcessScheduleCallback(process=None, mode="linear")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["uniform", "process"])
def test_disabled_callback_is_inert(mode: str) -> None:
    module = make_module()
    process = make_process(module.pathway_names) if mode == "process" else None
    cb = ProcessScheduleCallback(process=process, mode=mode, enabled=False)  # type: ignore[arg-type]
    trainer, rec = fit(module, [cb], max_steps=3)
    assert module.normalization == "biased_softmax"
    assert rec.steps == [0, 1, 2]
    for _, _, logits in rec.inside:
        assert torch.equal(logits, torch.ones(module.num_pathways))


# --------------------------------------------------------------------------- accumulation
def test_gradient_accumulation_one_row_per_optimizer_step() -> None:
    module = make_module()
    process = make_process(module.pathway_names)
    cb = ProcessScheduleCallback(process=process, mode="process")
    trainer, rec = fit(module, [cb], max_steps=6, accumulate_grad_batches=2)
    total = trainer.estimated_stepping_batches
    assert total == 6
    assert trainer.global_step == 6
    # Two micro-batches per optimizer step, both with that step's logits.
    assert rec.steps == [s for s in range(6) for _ in range(2)]
    for step, _, logits in rec.inside:
        assert torch.equal(logits, process.at(step, total)), step
    assert len(cb._replayed) == 6
    for step, row in enumerate(cb._replayed):
        assert torch.equal(row, process.at(step, total))
    assert_never_trained(module, rec)


# --------------------------------------------------------------------------- transfer
def test_other_pathway_names_are_refused_at_fit_start() -> None:
    module = make_module()
    names = [f"t{i}->s{i}:conv_bn" for i in range(module.num_pathways)]
    process = make_process(names)
    cb = ProcessScheduleCallback(process=process, mode="process")
    rec = Recorder()
    with pytest.raises(ProcessFileError) as info:
        fit(module, [cb], recorder=rec, max_steps=3)
    msg = str(info.value)
    assert "Missing from the process" in msg and "Extra in the process" in msg
    for name in module.pathway_names:
        assert repr(name) in msg
    for name in names:
        assert repr(name) in msg
    assert rec.inside == []  # refused before any step


def test_other_pathway_names_with_position_map() -> None:
    module = make_module()
    names = [f"t{i}->s{i}:conv_bn" for i in range(module.num_pathways)]
    process = make_process(names)
    cb = ProcessScheduleCallback(process=process, mode="process", pathway_map="position")
    trainer, rec = fit(module, [cb], max_steps=5)
    assert rec.steps == list(range(5))
    for step, _, logits in rec.inside:
        assert torch.equal(logits, process.at(step, 5))


def test_other_pathway_names_with_dict_map() -> None:
    module = make_module()
    p = module.num_pathways
    names = [f"t{i}->s{i}:conv_bn" for i in range(p)]
    process = make_process(names)
    # Module pathway j takes process column p-1-j.
    mapping = {n: names[p - 1 - j] for j, n in enumerate(module.pathway_names)}
    cb = ProcessScheduleCallback(process=process, mode="process", pathway_map=mapping)
    trainer, rec = fit(module, [cb], max_steps=5)
    for step, _, logits in rec.inside:
        assert torch.equal(logits, process.at(step, 5).flip(0))


def test_reordered_names_are_permuted() -> None:
    module = make_module()
    names = list(reversed(module.pathway_names))
    process = make_process(names)
    cb = ProcessScheduleCallback(process=process, mode="process")
    trainer, rec = fit(module, [cb], max_steps=4)
    for step, _, logits in rec.inside:
        assert torch.equal(logits, process.at(step, 4).flip(0))


# --------------------------------------------------------------------------- normalisation
def test_normalization_mismatch_strict_raises() -> None:
    module = make_module()
    process = make_process(module.pathway_names, name="softmax")
    cb = ProcessScheduleCallback(process=process, mode="process", strict=True)
    with pytest.raises(ProcessFileError, match="normalization 'softmax'.*'biased_softmax'"):
        fit(module, [cb], max_steps=2)
    module = make_module()
    process = make_process(module.pathway_names, bias=2.0)
    cb = ProcessScheduleCallback(process=process, mode="process", strict=True)
    with pytest.raises(ProcessFileError, match=r"bias 2\.0"):
        fit(module, [cb], max_steps=2)


def test_a_bias_is_compared_only_where_it_is_used() -> None:
    """A softmax process's recorded bias plays no part in its weights: it replays on a softmax
    module whatever either bias is."""
    module = make_module(normalization="softmax")
    process = make_process(module.pathway_names, name="softmax", bias=2.0)
    cb = ProcessScheduleCallback(process=process, mode="process", strict=True)
    trainer, rec = fit(module, [cb], max_steps=2)
    assert rec.steps == [0, 1]


def test_normalization_mismatch_not_strict_warns_and_replays() -> None:
    module = make_module()
    process = make_process(module.pathway_names, name="softmax")
    cb = ProcessScheduleCallback(process=process, mode="process", strict=False)
    with pytest.warns(UserWarning, match="Keeping the module's normalisation"):
        trainer, rec = fit(module, [cb], max_steps=4)
    assert module.normalization == "biased_softmax"
    assert rec.steps == list(range(4))
    for step, _, logits in rec.inside:
        assert torch.equal(logits, process.at(step, 4))


# --------------------------------------------------------------------------- resume
def test_resume_mid_replay_matches_uninterrupted_run(tmp_path: Path) -> None:
    total = 10
    module = make_module()
    process = make_process(module.pathway_names)
    f = tmp_path / "process.json"
    process.save(f)
    ckpts = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=3, save_top_k=-1
    )
    cb = ProcessScheduleCallback(process=str(f), mode="process")
    _, full = fit(module, [cb, ckpts], max_steps=total, enable_checkpointing=True)
    assert full.steps == list(range(total))
    mid = tmp_path / "ckpt" / "step=6.ckpt"  # mid-epoch (epoch 1, batch 1)
    assert mid.is_file(), sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    state = torch.load(mid, map_location="cpu", weights_only=False)
    assert state["global_step"] == 6
    saved = [v for k, v in state["callbacks"].items() if "ProcessScheduleCallback" in k]
    assert saved == [
        {
            "mode": "process",
            "smooth_steps": 1,
            "fingerprint": process.fingerprint(),
            "total_steps": total,
        }
    ]

    resumed_cb = ProcessScheduleCallback(process=str(f), mode="process")
    trainer, rec = fit(make_module(), [resumed_cb], max_steps=total, ckpt_path=str(mid))
    assert trainer.global_step == total
    assert rec.steps == list(range(6, total))
    for step, _, logits in rec.inside:
        assert torch.equal(logits, full.inside[step][2]), step
        assert torch.equal(logits, process.at(step, total))


def test_resume_with_another_process_is_refused(tmp_path: Path) -> None:
    module = make_module()
    process = make_process(module.pathway_names)
    ckpts = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=2, save_top_k=-1
    )
    cb = ProcessScheduleCallback(process=process, mode="process")
    fit(module, [cb, ckpts], max_steps=4, enable_checkpointing=True)
    mid = tmp_path / "ckpt" / "step=2.ckpt"
    assert mid.is_file()
    other = make_process(module.pathway_names, shift=0.5)
    assert other.fingerprint() != process.fingerprint()
    rec = Recorder()
    with pytest.raises(ProcessFileError, match="fingerprint") as info:
        fit(
            make_module(),
            [ProcessScheduleCallback(process=other, mode="process")],
            recorder=rec,
            max_steps=4,
            ckpt_path=str(mid),
        )
    assert process.fingerprint() in str(info.value) and other.fingerprint() in str(info.value)
    assert rec.inside == []


def _checkpoint_at_step(tmp_path: Path, module, process, total: int, at: int) -> Path:
    ckpts = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=at, save_top_k=-1
    )
    cb = ProcessScheduleCallback(process=process, mode="process")
    fit(module, [cb, ckpts], max_steps=total, enable_checkpointing=True)
    return tmp_path / "ckpt" / f"step={at}.ckpt"


def test_resume_with_another_length_keeps_the_checkpoints_stretch(tmp_path: Path) -> None:
    module = make_module()
    process = make_process(module.pathway_names)
    mid = _checkpoint_at_step(tmp_path, module, process, total=10, at=6)
    resumed = ProcessScheduleCallback(process=process, mode="process")
    with pytest.warns(UserWarning, match="keeps the checkpoint's stretch"):
        _, rec = fit(make_module(), [resumed], max_steps=20, ckpt_path=str(mid))
    for step, _, logits in rec.inside:
        assert torch.equal(logits, process.at(step, 10)), step


@pytest.mark.parametrize(
    "change, match",
    [({"mode": "final"}, "mode='process'"), ({"smooth_steps": 3}, "smooth_steps=1")],
)
def test_resume_with_another_mode_or_smoothing_is_refused(tmp_path: Path, change, match) -> None:
    module = make_module()
    process = make_process(module.pathway_names)
    mid = _checkpoint_at_step(tmp_path, module, process, total=4, at=2)
    rec = Recorder()
    with pytest.raises(ProcessFileError, match=match):
        fit(
            make_module(), [ProcessScheduleCallback(process=process, **{"mode": "process", **change})],
            recorder=rec, max_steps=4, ckpt_path=str(mid),
        )  # fmt: skip
    assert rec.inside == []


# --------------------------------------------------------------------------- pruning
def test_pruned_pathways_are_not_computed_during_replay() -> None:
    module = make_module(prune_threshold=0.0)
    process = make_process(module.pathway_names)
    total = 9
    calls: list[tuple[int, int]] = []
    for i, head in enumerate(module.distill_heads.heads):
        head.register_forward_hook(
            lambda mod, args, out, i=i: calls.append((module.global_step, i))
        )
    cb = ProcessScheduleCallback(process=process, mode="process")
    trainer, rec = fit(module, [cb], max_steps=total)
    assert rec.steps == list(range(total))
    n_pruned = n_active = 0
    for step in range(total):
        logits = process.at(step, total)
        expected = {i for i in range(module.num_pathways) if logits[i] > 0.0}
        called = [i for s, i in calls if s == step]
        assert sorted(called) == sorted(expected), step  # each active head exactly once
        n_pruned += module.num_pathways - len(expected)
        n_active += len(expected)
    # The process really prunes some pathways some of the time, and not all of them.
    assert n_pruned > 0 and n_active > 0
    pruned_sets = {
        frozenset(i for i in range(module.num_pathways) if process.at(s, total)[i] <= 0.0)
        for s in range(total)
    }
    assert len(pruned_sets) > 1  # the pruned set changes during the run


def test_replay_runs_are_comparable_in_the_loggers(tmp_path):
    """The replay's file, mode and fingerprint in the hyperparameters, and the replayed
    weights as scalars (a run table compares process / final / uniform replays)."""
    import csv

    import yaml
    from conftest import quiet_trainer
    from lightning.pytorch.loggers import CSVLogger

    from distpro_lightning import DistillationProcess, ProcessScheduleCallback
    from distpro_lightning.data import DigitsDataModule

    torch.manual_seed(0)
    m = make_module(transforms=["conv_bn"], prune_threshold=0.5)
    process = DistillationProcess(
        m.pathway_names, {"name": "biased_softmax", "bias": 1.0, "scale": float(m.weight_scale)}
    )
    for t in range(4):
        process.append(torch.linspace(0.0, 2.0, m.num_pathways) * (t + 1) / 4)
    process.save(tmp_path / "p.json")
    replay = ProcessScheduleCallback(process=str(tmp_path / "p.json"), mode="final", plot=False)
    dm = DigitsDataModule(batch_size=32, mode="retrain", subset=256, seed=0)
    quiet_trainer(
        max_steps=4, limit_val_batches=0, callbacks=[replay], logger=CSVLogger(tmp_path),
        log_every_n_steps=1,
    ).fit(m, datamodule=dm)  # fmt: skip
    run = tmp_path / "lightning_logs" / "version_0"
    saved = yaml.safe_load((run / "hparams.yaml").read_text())
    assert saved["replay"]["num_pathways"] == m.num_pathways
    assert saved["distillation"]["transforms"] == ["conv_bn"]
    hp = saved["replay"]
    assert hp["process"] == str(tmp_path / "p.json") and hp["mode"] == "final"
    assert hp["fingerprint"] == process.fingerprint() and hp["replay_steps"] == 4
    rows = [r for r in csv.DictReader((run / "metrics.csv").open()) if r["replay/active_pathways"]]
    final = process.final()
    assert float(rows[-1]["replay/active_pathways"]) == int((final > 0.5).sum())


@pytest.mark.parametrize("window, warns", [(3, False), (5, True), (7, True)])
def test_a_smoothing_window_as_long_as_the_process_warns(window, warns, recwarn) -> None:
    """A centred window that spans the whole 5-row process flattens it to about a
    constant: said, with the fix; a shorter window replays smoothed, without a word."""
    module = make_module()
    process = make_process(module.pathway_names, t_search=5)
    cb = ProcessScheduleCallback(process=process, smooth_steps=window, plot=False)
    _, rec = fit(module, [cb], max_steps=5)
    said = [w for w in recwarn if "spans the whole process" in str(w.message)]
    assert len(said) == int(warns)
    if warns:
        assert f"smooth_steps={window}" in str(said[0].message) and "mode='final'" in str(
            said[0].message
        )
    smoothed = process.smoothed(window)
    for step, _, logits in rec.inside:  # the smoothed process is what is replayed
        assert torch.equal(logits, smoothed.at(step, 5))


# ---------------------------------------------------------------- issue 37, cases 5 to 8
def test_mode_final_with_the_kd_pathway_warns_of_the_collapse(recwarn) -> None:
    module = make_module(response_kd=True)
    process = make_process(module.pathway_names)
    with pytest.warns(UserWarning, match=r"mode='final'\) with the logits->logits:kd pathway"):
        ProcessScheduleCallback(process=process, mode="final").check(module)
    recwarn.clear()
    ProcessScheduleCallback(process=process, mode="process").check(module)
    assert not [w for w in recwarn if "collapse" in str(w.message)]


def test_a_replay_that_prunes_every_pathway_is_refused_and_partly_pruned_rows_are_said():
    module = make_module(prune_threshold=10.0)  # above every logit of the process
    process = make_process(module.pathway_names)
    with pytest.raises(ValueError, match=r"prune_threshold=10 prunes every pathway at every"):
        ProcessScheduleCallback(process=process).check(module)
    rows = process.logits.clone()
    rows[1:3] = -5.0  # two rows below any threshold >= -5
    partly = process.with_rows(rows)
    module = make_module(prune_threshold=-4.0)
    with pytest.warns(UserWarning, match=r"prune_threshold=-4 prunes every pathway at 2 of"):
        ProcessScheduleCallback(process=partly).check(module)


def test_a_replay_at_another_kd_temperature_warns_and_the_search_records_it(recwarn) -> None:
    module = make_module(response_kd=True, kd_temperature=2.0)
    made = module.new_process({"created": "now"})
    assert made.provenance["kd_temperature"] == 2.0  # recorded by the search
    process = make_process(module.pathway_names)
    process.provenance["kd_temperature"] = 4.0
    with pytest.warns(UserWarning, match=r"searched with kd_temperature=4, the module replays"):
        ProcessScheduleCallback(process=process).check(module)
    process.provenance["kd_temperature"] = 2.0
    recwarn.clear()
    ProcessScheduleCallback(process=process).check(module)
    assert not [w for w in recwarn if "kd_temperature" in str(w.message)]


def test_a_mistyped_pathway_map_key_is_refused_with_the_closest_name() -> None:
    module = make_module()
    names = [f"t{i}->s{i}:conv_bn" for i in range(module.num_pathways)]
    mapping = {n: names[j] for j, n in enumerate(module.pathway_names)}
    first = module.pathway_names[0]
    mapping[first.replace("conv_bn", "conv_bm")] = names[0]  # a typo beside the right key
    cb = ProcessScheduleCallback(process=make_process(names), pathway_map=mapping)
    with pytest.raises(
        ProcessFileError, match=rf"not pathways of the module: .*did you mean '{first}'"
    ):
        cb.check(module)


def test_a_process_of_another_search_space_names_the_settings_the_file_records() -> None:
    """Replaying a process of the recommended space in the paper's 27-pathway space: the
    refusal names the settings the process file records (not only pathway_map)."""
    from conftest import make_module

    from distpro_lightning.process.format import ProcessFileError

    searched = make_module(transforms=["conv_bn"], response_kd=True, review_kd=True)
    process = searched.new_process({})
    process.append(torch.ones(searched.num_pathways))
    paper = make_module()  # conv_bn, attn2, attn3; no KD, no review
    cb = ProcessScheduleCallback(process=process)
    with pytest.raises(ProcessFileError) as exc:
        cb.check(paper)
    text = str(exc.value)
    assert "another search space" in text
    assert "distillation.transforms=['conv_bn']" in text
    assert "distillation.response_kd=True" in text and "distillation.review_kd=True" in text
    assert "taps" not in text.split("(the module has")[0]  # the taps are the same
    cb.check(make_module(transforms=["conv_bn"], response_kd=True, review_kd=True))  # fits


def test_replay_figures_are_named_by_their_epoch_written_per_epoch_and_weights_logged(
    tmp_path: Path,
) -> None:
    """A 2-epoch replay under a CSV logger: figures of epoch 0 and 1 (written at each
    epoch's end, none named epoch002) and ``alpha_weight/<pathway>`` per pathway, as the
    search logs them."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    module = make_module()
    process = make_process(module.pathway_names)
    written: list[set[str]] = []

    class FiguresAtEpochEnd(Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            folder = Path(trainer.logger.log_dir) / "figures"
            written.append({p.name for p in folder.glob("*.png")} if folder.is_dir() else set())

    replay = ProcessScheduleCallback(process=process)
    logger = CSVLogger(tmp_path, name="replay")
    trainer = make_trainer(
        [replay, FiguresAtEpochEnd()], max_epochs=2, logger=logger, log_every_n_steps=1
    )
    trainer.fit(module, datamodule=make_dm())
    names = {f"replay_process_{k}_epoch{e:03d}.png" for k in ("lines", "heatmap") for e in (0, 1)}
    folder = Path(logger.log_dir) / "figures"
    assert {p.name for p in folder.glob("*.png")} == names
    assert "replay_process_lines_epoch000.png" in written[0]  # at the end of epoch 0 already
    with open(Path(logger.log_dir) / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    for name in module.pathway_names:
        values = [float(r[f"alpha_weight/{name}"]) for r in rows if r.get(f"alpha_weight/{name}")]
        assert len(values) == 2 * BATCHES_PER_EPOCH
    last = [r for r in rows if r.get(f"alpha_weight/{module.pathway_names[0]}")][-1]
    expected = module.alpha_weights().tolist()
    got = [float(last[f"alpha_weight/{n}"]) for n in module.pathway_names]
    assert got == pytest.approx(expected, rel=1e-5)


class _Stream(torch.utils.data.IterableDataset):
    """``batches`` batches of digits from a stream without ``len()``: the run's length is
    unknown to Lightning (``estimated_stepping_batches`` is infinite)."""

    def __init__(self, batches: int) -> None:
        dm = make_dm()
        dm.setup("fit")
        self.loader = dm.train_dataloader()
        self.batches = batches

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.batches:
                return
            yield batch


class _StopAt(Callback):
    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer, *args) -> None:
        trainer.should_stop = trainer.global_step >= self.steps


@pytest.mark.parametrize(
    "run, estimate",
    [("a loader without len()", -1), ("max_epochs=-1 (as max_time alone)", float("inf"))],
)
def test_a_run_of_unknown_length_says_the_process_is_not_stretched(run, estimate) -> None:
    """Lightning estimates -1 or inf steps; the replay does not stretch (it collapsed to
    the last row after step 0 with -1) and says so."""
    module = make_module()
    process = make_process(module.pathway_names, t_search=3)
    rec = Recorder()
    if estimate == -1:
        kw = dict(max_epochs=1)
        data = dict(train_dataloaders=torch.utils.data.DataLoader(_Stream(4), batch_size=None))
    else:
        kw = dict(max_epochs=-1)
        data = dict(datamodule=make_dm())
    callbacks = [ProcessScheduleCallback(process=process), rec, _StopAt(4)]
    trainer = make_trainer(callbacks, **kw)
    with pytest.warns(UserWarning, match=r"length is unknown .* its 3 rows are replayed one per"):
        trainer.fit(module, **data)
    assert trainer.estimated_stepping_batches == estimate and trainer.global_step == 4
    assert [step for step, _, _ in rec.inside] == [0, 1, 2, 3]
    for step, _, logits in rec.inside:  # as said: one row per step, then the last row held
        assert torch.equal(logits, process.logits[min(step, 2)]), step
