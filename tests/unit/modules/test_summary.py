"""The pathway summary at fit start and in ``distpro process summary``."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import make_module, quiet_trainer
from lightning.pytorch.callbacks import ModelSummary

from distpro_lightning.cli.main import main
from distpro_lightning.data import DigitsDataModule
from distpro_lightning.modules.summary import pathway_rows


def test_rows_match_the_heads_shapes_and_pruning():
    m = make_module(transforms=["conv_bn", "attn2"], prune_threshold=0.5, response_kd=True)
    m.alpha_logits[:] = torch.linspace(0, 1, m.num_pathways)
    rows = pathway_rows(m)
    assert [r.name for r in rows] == m.pathway_names
    assert sum(r.head_parameters for r in rows) == sum(
        p.numel() for p in m.distill_heads.parameters()
    )
    assert [r.pruned for r in rows] == [bool(a <= 0.5) for a in m.alpha_logits]
    student_feats = {}
    hooks = [
        dict(m.student.named_modules())[name].register_forward_hook(
            lambda mod, i, o, name=name: student_feats.__setitem__(name, tuple(o.shape[1:]))
        )
        for name in m.student_tap_names
    ]
    m.student(torch.zeros(2, 1, 8, 8))
    for h in hooks:
        h.remove()
    for r, spec in zip(rows, m.pathway_specs):
        assert r.student_shape == student_feats[spec.student_tap]
        assert r.transform == spec.kind
    assert rows[-1].transform == "kd" and rows[-1].student_shape == (10,)
    text = m.pathway_summary()
    student = sum(p.numel() for p in m.student.parameters())
    assert f"of the student's {student:,}" in text


def test_printed_at_fit_start_with_the_model_summary(caplog):
    m = make_module(transforms=["conv_bn"])
    with caplog.at_level(logging.INFO):
        quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[ModelSummary()]).fit(
            m, datamodule=DigitsDataModule(batch_size=16, subset=32)
        )
    assert "DistPro pathways:" in caplog.text and m.pathway_names[0] in caplog.text


def test_process_summary_shows_the_table(tmp_path, capsys):
    m = make_module(transforms=["conv_bn"], prune_threshold=0.9)
    proc = m.new_process({})
    proc.append(torch.linspace(0, 2, m.num_pathways))
    proc.save(tmp_path / "p.json")
    try:
        main(["process", "summary", str(tmp_path / "p.json")])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    # the file's own facts: weights sorted heaviest first, no empty shape columns
    assert "w last" in out and "prune threshold 0.9" in out and "head params" not in out
    assert out.count("w first") == 1  # one weight table
    rows = [
        li.split()
        for li in out.splitlines()
        if li.split()[1:2] and li.split()[1] in m.pathway_names
    ]
    assert rows[0][1] == m.pathway_names[-1]  # the largest logit, the largest weight
    line = next(r for r in rows if r[1] == m.pathway_names[0])
    assert line[-1] == "yes"  # logit 0 <= 0.9


def test_mixin_modules_get_the_summary_and_a_hint_when_heads_dwarf_the_student(caplog):
    """The pathway table at fit start for a user's mixin module (not only DistProModule),
    and a warning naming the fixes when the heads hold > 10x the student's parameters."""
    import logging

    import torch
    from conftest import quiet_trainer
    from own_project import NetModule, PlainData, SmallCNN

    from distpro_lightning import DistProModule

    torch.manual_seed(0)
    with caplog.at_level(logging.INFO):
        quiet_trainer(max_steps=1, enable_model_summary=True).fit(NetModule(), PlainData())
    assert "DistPro pathways:" in caplog.text
    taps = ["layer1", "layer2", "layer3"]
    tiny = DistProModule(
        student=SmallCNN(width=2), teacher=SmallCNN(width=32), in_channels=1,
        distillation={"student_taps": taps, "teacher_taps": taps, "input_shape": [1, 8, 8]},
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"pathway heads hold .* x the student's"):
        quiet_trainer(max_steps=1).fit(tiny, PlainData())


class _RecordedSummary(ModelSummary):
    """Lightning's model summary, its table kept (column name -> values)."""

    tables: list[dict[str, list[str]]] = []

    @staticmethod
    def summarize(summary_data, *args, **kwargs):
        _RecordedSummary.tables.append(dict(summary_data))
        return ModelSummary.summarize(summary_data, *args, **kwargs)


def test_frozen_teacher_is_eval_in_the_model_summary_without_the_eval_mode_warning():
    """The tutorials' steps (mixin.md, dense.md): a teacher put in eval mode by the user,
    ``configure_distillation``, a fit with the model summary. Lightning's table lists the
    teacher as ``eval`` and no warning about modules in eval mode is raised."""
    import warnings

    from lightning.pytorch import LightningModule

    from distpro_lightning import DistProMixin
    from distpro_lightning.models import create

    class MyStudent(DistProMixin, LightningModule):
        def __init__(self, teacher):
            super().__init__()
            self.student = create("resnet8", num_classes=10, in_channels=1)
            self.configure_distillation(teacher, transforms=["conv_bn"], input_shape=[1, 8, 8])

        def training_step(self, batch, batch_idx):
            logits, kd_loss = self.distill(batch[0])
            return self.task_loss(logits, batch[1]) + kd_loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    teacher = create("resnet14", num_classes=10, in_channels=1)
    teacher.eval()  # as the dense tutorial does after training it
    module = MyStudent(teacher)
    module.train()  # the module's train() leaves the frozen teacher in eval mode
    assert not module.teacher.training and module.student.training
    _RecordedSummary.tables.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(max_steps=1, callbacks=[_RecordedSummary()]).fit(
            module, datamodule=DigitsDataModule(batch_size=16, subset=32)
        )
    (table,) = _RecordedSummary.tables
    modes = dict(zip(table["Name"], table["Mode"]))
    assert modes["teacher"] == "eval" and modes["student"] == "train", modes
    assert not any("eval mode" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert not module.teacher.training


def test_every_pathway_of_the_recommended_space_counts_as_lightnings_model_summary():
    """The recommended space (conv_bn feature pathways, ReviewKD's review, Hinton KD): one
    row per pathway, the review row included, numbered 1..P, each row's head parameters
    and the total equal to the numbers Lightning's own ModelSummary gives the submodules
    of ``distill_heads``."""
    from lightning.pytorch.utilities.model_summary import ModelSummary as Summary

    m = make_module(transforms=["conv_bn"], response_kd=True, review_kd=True, prune_threshold=0.5)
    rows = pathway_rows(m)
    assert [r.name for r in rows] == m.pathway_names
    assert "review->review:abf" in [r.name for r in rows]
    summary = Summary(m, max_depth=-1)
    counts = dict(zip(summary.layer_names, summary.param_nums))
    for i, row in enumerate(rows):
        if row.name == "review->review:abf":
            assert row.head_parameters == counts["distill_heads.review"]
        elif row.transform == "kd":
            assert row.head_parameters == 0
        else:
            assert row.head_parameters == counts[f"distill_heads.heads.{i}"], row.name
    assert sum(r.head_parameters for r in rows) == counts["distill_heads"]
    text = m.pathway_summary()
    numbered = [
        li.split()[:2]
        for li in text.splitlines()
        if li.split()[1:2] in [[n] for n in m.pathway_names]
    ]
    assert numbered == [[str(i + 1), n] for i, n in enumerate(m.pathway_names)]
    assert f"{m.num_pathways} pathways" in text
    assert f"{counts['distill_heads']:,} head parameters" in text


def test_head_size_warning_names_the_largest_head_and_only_fixes_not_in_force():
    from distpro_lightning.modules.summary import heads_size_warning

    m = make_module(
        transforms=["conv_bn"], response_kd=True, review_kd=True, prune_threshold=0.5,
        connections="lower_to_higher",
    )  # fmt: skip
    rows = pathway_rows(m)
    largest = max(rows, key=lambda r: r.head_parameters)
    m.student = torch.nn.Sequential(torch.nn.Linear(2, 2))  # a tiny student: heads dwarf it
    text = heads_size_warning(m)
    assert text is not None and f"The largest is {largest.name}'s" in text
    assert f"({largest.head_parameters:,})" in text
    # conv_bn, lower_to_higher and pruning are set: none of them is advised again
    assert "transforms=[conv_bn]" not in text and "prune_threshold=0.5" not in text
    assert "connections=lower_to_higher" not in text
    wide = make_module(transforms=["conv_bn", "attn2"])
    wide.student = torch.nn.Sequential(torch.nn.Linear(2, 2))
    advice = heads_size_warning(wide)
    assert "transforms=[conv_bn]" in advice and "prune_threshold=0.5" in advice
    assert "connections=lower_to_higher" in advice
