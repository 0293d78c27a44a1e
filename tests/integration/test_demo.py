"""``distpro demo`` (the README's first command) end to end at a small size: it searches in
the recommended space with the recommended cheap recipe, replays the process, runs a
baseline, writes its summary, and reuses a process only when it was searched with the same
settings."""

from __future__ import annotations

import json

import lightning.pytorch as lp
import pytest
import torch
from conftest import needs_fashion, quiet_trainer

from distpro_lightning import ClassifierModule, DistillationProcess
from distpro_lightning.cli import demo
from distpro_lightning.cli.demo import demo_main, save_teacher
from distpro_lightning.data import DigitsDataModule


def _cached_teacher(root):
    """A cached teacher (untrained: fast), recorded as the demo records one it trained."""
    root.mkdir()
    torch.manual_seed(0)
    teacher = ClassifierModule("resnet20", 10, 1)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(teacher, DigitsDataModule(batch_size=16, subset=64))
    # the demo's defaults: 3 epochs, seed 0, batch 128
    settings = {"teacher": "resnet20", "teacher_epochs": 3, "seed": 0, "batch_size": 128}
    save_teacher(trainer, root / "teacher.ckpt", settings)


def _one_test_batch(**kw):
    """The demo's Trainer, testing on one batch of the 10,000 test images (its full test
    pass: ``test_the_demo_runs_end_to_end_with_its_full_test_pass``, slow tier)."""
    return lp.Trainer(**kw, limit_test_batches=1)


def _small_split_warned():
    """A search on 256 images: its search-validation split (51 images) is smaller than the
    demo's batch of 128, which the data module says as it shrinks that batch."""
    return pytest.warns(UserWarning, match="search-validation split has only 51 samples")


# the demo's cheap recipe on 2 batches updates alpha once, which the search says
@pytest.mark.filterwarnings("ignore:search.schedule.every_n_steps=4 with a fit of:UserWarning")
@needs_fashion
def test_the_demo_searches_the_recommended_space_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # its relative defaults (runs/...) stay in here
    monkeypatch.setattr(demo, "Trainer", _one_test_batch)
    root = tmp_path / "demo"
    _cached_teacher(root)
    argv = ["--root", str(root), "--data-dir", str(tmp_path / "data"), "--subset", "256"]
    argv += ["--search-epochs", "1", "--epochs", "1", "--methods", "hinton_kd", "distpro"]
    with _small_split_warned():
        assert demo_main(argv) == 0
    out = capsys.readouterr().out
    # the committed teacher, said with its provenance; the cached one is not trained or used
    assert "teacher: the committed resnet20, " in out and "teachers/README.md" in out
    assert "teacher_resnet20.pt" in out
    # each row's cost in x the Hinton KD run (DistPro's with the search phase)
    summary = json.loads((root / "summary.json").read_text())
    times = summary["times_s"]
    row = next(li for li in out.splitlines() if li.startswith("DistPro (searched process)"))
    expected = (times["distpro"] + times["search"]) / times["hinton_kd"]
    assert row.split()[-2:] == [f"{expected:.2f}", "x"]
    assert "x Hinton KD" in out and "not a measure" in out
    process = DistillationProcess.load(root / "process.json")
    assert process.num_pathways == 11  # 9 conv_bn + logits->logits:kd + review->review:abf
    assert {"logits->logits:kd", "review->review:abf"} <= set(process.pathway_names)
    summary = json.loads((root / "summary.json").read_text())
    assert set(summary["results"]) == {"hinton_kd", "distpro"}
    assert all(0.0 <= v <= 1.0 for v in summary["results"].values())
    assert summary["args"]["space"] == "recommended"
    # the recommended cheap recipe: alpha every 4th step, a proxy (recorded as such)
    run = process.provenance["run_settings"]
    assert run["search_every_n_steps"] == 4 and run["proxy"] is True
    assert process.searched_steps() == list(range(0, len(process), 4))

    # a process searched with other settings is not reused; the same settings reuse it
    capsys.readouterr()
    again = [*argv[:-2], "student", "--search-every", "1", "--train-teacher"]
    with _small_split_warned():
        assert demo_main(again) == 0
    out = capsys.readouterr().out
    assert "not reusing" in out and "every_n_steps 4 there, 1 now" in out
    assert DistillationProcess.load(root / "process.json").searched_steps() == list(
        range(len(process))
    )
    assert demo_main(again) == 0
    out = capsys.readouterr().out
    assert f"search: reusing {root / 'process.json'}" in out
    assert f"teacher: reusing {root / 'teacher.ckpt'}" in out
    recorded = DistillationProcess.load(root / "process.json").provenance["demo_settings"]
    assert not (root / "process.searching.json").exists()
    assert recorded["tau"] == 0.5 and recorded["subset"] == 256 and recorded["seed"] == 0


# the demo's cheap recipe on 2 batches updates alpha once, and its "use alpha_T" row replays
# final weights with the KD pathway on purpose; both are said by the library
@pytest.mark.filterwarnings("ignore:search.schedule.every_n_steps=4 with a fit of:UserWarning")
@pytest.mark.filterwarnings("ignore:ProcessScheduleCallback.mode='final'. with the:UserWarning")
@pytest.mark.slow
@needs_fashion
def test_the_demo_runs_end_to_end_with_its_full_test_pass(tmp_path, monkeypatch, capsys):
    """One demo run as a user gets it (the 10,000 test images for the teacher and each
    method), at a small training size."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "demo"
    _cached_teacher(root)
    argv = ["--root", str(root), "--data-dir", str(tmp_path / "data"), "--subset", "256"]
    with _small_split_warned():
        assert demo_main([*argv, "--search-epochs", "1", "--epochs", "1"]) == 0
    summary = json.loads((root / "summary.json").read_text())
    assert set(summary["results"]) == set(demo.DEMO_METHODS)
    assert all(0.0 <= v <= 1.0 for v in summary["results"].values())
    assert 0.0 <= summary["teacher_top1"] <= 1.0
    assert "test top-1 on 10,000 images" in capsys.readouterr().out


def _process(settings=None) -> DistillationProcess:
    provenance = {"demo_settings": settings} if settings is not None else {}
    norm = {"name": "biased_softmax", "bias": 1.0, "scale": 2.0}
    return DistillationProcess(["a", "b"], norm, [[0.0, 1.0]], provenance=provenance)


def test_a_demo_file_is_reused_only_with_the_settings_it_was_made_with(tmp_path):
    from distpro_lightning.cli.demo import differing

    made = tmp_path / "process.json"
    _process().save(made)
    assert differing(made, {"tau": 0.5}) == ["process.json records no demo settings inside it"]
    _process({"tau": 0.5, "seed": 0, "subset": 6000}).save(made)
    assert differing(made, {"tau": 0.5, "seed": 0, "subset": 6000}) == []
    assert differing(made, {"tau": 0.3, "seed": 0, "subset": None}) == [
        "tau 0.5 there, 0.3 now",
        "subset 6000 there, None now",
    ]
    # a sidecar file beside it is no record: the settings live inside the file (case 4)
    (tmp_path / "process.settings.json").write_text(json.dumps({"tau": 0.3}))
    assert differing(made, {"tau": 0.3}) == ["tau 0.5 there, 0.3 now"]


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--subset", "-5", "--subset: must be >= 0, got -5"),
        ("--search-every", "0", "--search-every: must be >= 1, got 0"),
        ("--lr", "0", "--lr: must be > 0, got 0"),
        ("--tau", "nan", "--tau: must be finite, got nan"),
        ("--epochs", "two", "--epochs: 'two' is not int"),
    ],
)
def test_the_demo_refuses_bad_settings_before_touching_anything(
    tmp_path, capsys, flag, value, says
):
    """Issue 37, case 2: ``--search-every 0`` deleted the earlier process, then failed."""
    _process({"lr": 0.05}).save(tmp_path / "process.json")
    before = (tmp_path / "process.json").read_bytes()
    with pytest.raises(SystemExit) as exc:
        demo_main(["--root", str(tmp_path), flag, value])
    assert exc.value.code == 2 and says in capsys.readouterr().err
    assert (tmp_path / "process.json").read_bytes() == before


def test_a_failed_demo_search_keeps_the_earlier_process_and_its_settings(tmp_path, monkeypatch):
    """Issue 37, cases 2 and 4: a new search (other ``--lr``) that dies, even after its
    rows are written, leaves ``process.json`` and the settings inside it as they were."""
    from distpro_lightning.cli import demo

    torch.manual_seed(0)
    teacher = ClassifierModule("resnet20", 10, 1)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(teacher, DigitsDataModule(batch_size=16, subset=64))
    ckpt = tmp_path / "teacher.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=True)
    old = demo._parser().parse_args(["--root", str(tmp_path)])
    _process(demo._search_settings(old, ckpt)).save(tmp_path / "process.json")
    before = (tmp_path / "process.json").read_bytes()

    class Killed:  # the search writes its rows, then the run dies
        def fit(self, *args, **kwargs):
            _process().save(tmp_path / "process.searching.json")
            raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_trainer", lambda *a, **k: Killed())
    new = demo._parser().parse_args(["--root", str(tmp_path), "--lr", "0.1"])
    with pytest.raises(KeyboardInterrupt):
        demo.phase_search(new, tmp_path, ckpt)
    assert (tmp_path / "process.json").read_bytes() == before
    assert demo.differing(tmp_path / "process.json", demo._search_settings(old, ckpt)) == []


def test_a_demo_process_is_reused_only_when_complete_and_searched_alike(tmp_path):
    from distpro_lightning.cli.demo import _reusable

    wanted = {"pathways": ["a", "b"], "alpha_lr": 0.05, "every_n_steps": 4, "epochs": 1}
    provenance = {
        "alpha_lr": 0.05,
        "run_settings": {"search_every_n_steps": 4, "proxy": True},
        "search_size": {"planned_steps": 3, "max_epochs": 1, "train_samples": 8},
    }
    norm = {"name": "biased_softmax", "bias": 1.0, "scale": 3.0}
    done = DistillationProcess(["a", "b"], norm, [[0.0, 1.0]] * 3, provenance=provenance)
    done.save(tmp_path / "done.json")
    assert _reusable(tmp_path / "done.json", wanted) is None
    cut = DistillationProcess(["a", "b"], norm, [[0.0, 1.0]] * 2, provenance=provenance)
    cut.save(tmp_path / "cut.json")
    assert _reusable(tmp_path / "cut.json", wanted) == "an interrupted search: 2 of 3 steps"
    other = {**wanted, "pathways": ["a", "c"], "alpha_lr": 0.5}
    assert _reusable(tmp_path / "done.json", other) == (
        "pathways ['a', 'b'] there, ['a', 'c'] now; alpha_lr 0.05 there, 0.5 now"
    )


def test_the_demo_help_shows_no_double_backticks(capsys):
    import pytest

    with pytest.raises(SystemExit):
        demo_main(["--help"])
    out = capsys.readouterr().out
    assert "--train-teacher" in out and "teacher_resnet20.pt" in out
    assert "``" not in out
