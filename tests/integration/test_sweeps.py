"""The sweep example end to end, offline: each trial writes its own process into its log
directory (with its score), logs it as a W&B artifact with the search settings as
hyperparameters, and ``distpro sweep-best`` retrains the best one; checkpoints land in the
run's log directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import needs_fashion
from test_configs import EX, ROOT, SMOKE_RUN_WARNING, _fake_teacher_checkpoint, _sweep_args

from distpro_lightning import DistillationProcess
from distpro_lightning.cli.main import main
from distpro_lightning.cli.sweeps import find_trials

pytestmark = pytest.mark.filterwarnings(SMOKE_RUN_WARNING)  # 3-step runs of the sweep config
SMALL = [
    "--trainer.max_steps=3",
    "--trainer.enable_progress_bar=false",
    "--trainer.log_every_n_steps=1",
    "--data.init_args.subset=128",
    "--data.init_args.batch_size=16",
]


def _trial_argv(sweep: dict, pick: int) -> list[str]:
    argv = []
    for item in sweep["command"]:
        if item == "${program}":
            continue
        if item == "${args}":
            argv += _sweep_args(sweep, pick)
        elif item.endswith(".yaml"):
            argv.append(str(ROOT / item))
        else:
            argv.append(item)
    return argv + SMALL


@needs_fashion
def test_sweep_trials_then_sweep_best_retrains_the_best(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the configs' relative paths (runs/, data/) resolve here
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    _fake_teacher_checkpoint(tmp_path / "runs/fashion_mnist/teacher/teacher.ckpt")
    sweep = yaml.safe_load((EX / "sweeps/search.yaml").read_text())
    import wandb

    for pick in (0, 1):
        main(_trial_argv(sweep, pick))
        wandb.finish()
    wandb.teardown()  # stops the wandb service once it has written every record
    trials = find_trials(tmp_path / "runs/wandb")
    assert len(trials) == 2 and len({t.path.parent for t in trials}) == 2  # one file each
    assert all(t.score is not None and t.steps == 3 for t in trials)
    assert trials[0].score <= trials[1].score
    # each trial's config.yaml in its own run folder, with its own settings (W&B's log_dir is
    # the shared save_dir: one config.yaml there would be overwritten by every trial)
    configs = sorted((tmp_path / "runs/wandb").rglob("config.yaml"))
    assert {c.parent for c in configs} == {t.path.parent for t in trials}
    lrs = set()
    for config in configs:
        saved = yaml.safe_load(config.read_text())
        searched = DistillationProcess.load(config.parent / "process.json").provenance
        assert saved["search"]["alpha"]["lr"] == pytest.approx(searched["alpha_lr"])
        lrs.add(saved["search"]["alpha"]["lr"])
    assert len(lrs) == 2
    # the artifact and the hyperparameters are in each offline run
    runs = sorted(tmp_path.rglob("offline-run-*"))
    assert len(runs) == 2
    for run in runs:
        records = next(run.glob("run-*.wandb")).read_bytes()
        assert b"distpro-process" in records  # the artifact's type
        # the config record: key "search", JSON value with the settings
        assert b"search" in records
        # the grouped names of the docs and the YAML: search.alpha.lr, search.alpha.betas ...
        for key in (b'"alpha"', b'"lr"', b'"hypergradient"', b'"warmup_steps"', b'"betas"'):
            assert key in records, key
    # retrain the best with the shipped retrain config
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "sweep-best",
                "runs/wandb",
                "--",
                "--config",
                str(EX / "fashion_mnist/retrain.yaml"),
                *SMALL,
                "--trainer.max_steps=2",
                "--trainer.max_epochs=1",
            ]
        )
    assert exc.value.code == 0
    out = capsys.readouterr().out
    best = trials[0].path.relative_to(tmp_path)
    assert f"best: {best} " in out
    logs = sorted((tmp_path / "runs/fashion_mnist/retrain").rglob("config.yaml"))
    assert len(logs) == 1
    saved = yaml.safe_load(logs[0].read_text())
    assert Path(saved["replay"]["process"]) == best
    picked = DistillationProcess.load(trials[0].path)
    assert saved["model"]["init_args"]["distillation"]["transforms"] == picked.transform_kinds
    ckpts = list((logs[0].parent / "checkpoints").glob("student*.ckpt"))
    assert ckpts, "the retrain's checkpoint is in its own log directory"
    assert DistillationProcess.load(trials[0].path).provenance["search_val_loss"] == pytest.approx(
        trials[0].score
    )


def test_sweep_best_without_scored_files_says_how(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep-best", str(tmp_path)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "--search.output.save_path '{log_dir}/process.json'" in err  # the key that exists


def test_sweep_best_lists_damaged_and_nan_trials_instead_of_dropping_them(tmp_path, capsys):
    import torch

    from distpro_lightning import DistillationProcess

    norm = {"name": "biased_softmax", "bias": 1.0, "scale": 1.0}
    for name, score in (("good", 0.5), ("nan_loss", 0.25), ("nan_rows", 0.1)):
        p = DistillationProcess(
            ["a->b:conv_bn", "a->c:conv_bn"], norm, provenance={"search_val_loss": score}
        )
        p.append(torch.tensor([1.0, 2.0]))
        (tmp_path / name).mkdir()
        p.save(tmp_path / name / "process.json")
    loss = tmp_path / "nan_loss" / "process.json"  # a trial whose held-out loss was NaN
    loss.write_text(loss.read_text().replace("0.25", "NaN"))
    rows = tmp_path / "nan_rows" / "process.json"  # a file whose rows were damaged to NaN
    rows.write_text(rows.read_text().replace("2.0", "NaN", 1))
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "process.json").write_text("{not json")
    with pytest.raises(SystemExit) as done:
        main(["sweep-best", str(tmp_path)])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.count("NOT RANKED") == 3
    assert "3 trial(s) not ranked" in out and "damaged" in out
    assert f"best: {tmp_path / 'good' / 'process.json'}" in out  # not the NaN trial's lower score
    with pytest.raises(SystemExit):
        main(["sweep-best", str(tmp_path / "missing")])
    assert "is not a folder" in capsys.readouterr().err


def test_sweep_best_says_ties_and_the_tie_break_and_lists_each_trials_settings(tmp_path, capsys):
    import torch

    norm = {"name": "biased_softmax", "bias": 1.0, "scale": 1.0}
    for name, score, lr in (("b_trial", 0.5, 0.1), ("a_trial", 0.5, 0.5), ("c_trial", 0.7, 1.0)):
        p = DistillationProcess(
            ["a->b:conv_bn", "a->c:conv_bn"], norm, transform_kinds=["conv_bn"],
            provenance={"search_val_loss": score, "alpha_lr": lr, "seed": 3},
        )  # fmt: skip
        p.append(torch.tensor([1.0, 2.0]))
        (tmp_path / name).mkdir()
        p.save(tmp_path / name / "process.json")
    with pytest.raises(SystemExit) as done:
        main(["sweep-best", str(tmp_path)])
    assert done.value.code == 0
    out = capsys.readouterr().out
    first = tmp_path / "a_trial" / "process.json"
    assert f"best: {first}" in out  # the tie-break: equal scores, then the path order
    assert "tie: 2 trials share the best search_val_loss 0.50000 (2 of them exactly)" in out
    assert "first path in alphabetical order" in out
    assert f"also tied: {tmp_path / 'b_trial' / 'process.json'}" in out
    for lr in (0.1, 0.5, 1.0):  # each trial's settings, as its file records them
        assert f"alpha.lr={lr} " in out
    assert out.count("transforms=[conv_bn]") == 3 and "seed=3" in out


@needs_fashion
def test_offline_grid_runs_two_trials_then_sweep_best_retrains_the_best(
    tmp_path, monkeypatch, capsys
):
    """The tuning path without W&B: distpro sweep-grid (two trials, each with its own log
    directory and scored process file), then distpro sweep-best retrains the best."""
    monkeypatch.chdir(tmp_path)
    _fake_teacher_checkpoint(tmp_path / "runs/fashion_mnist/teacher/teacher.ckpt")
    fit = ["--config", str(EX / "fashion_mnist/search.yaml"), *SMALL]
    with pytest.raises(SystemExit) as exc:
        main(["sweep-grid", "grid", "--param", "search.alpha.lr=0.01,0.5", "--", *fit])
    assert exc.value.code == 0
    trials = find_trials(tmp_path / "grid")
    assert len(trials) == 2 and all(t.score is not None for t in trials)
    lrs = sorted(DistillationProcess.load(t.path).provenance["alpha_lr"] for t in trials)
    assert lrs == [0.01, 0.5]
    configs = sorted((tmp_path / "grid").rglob("config.yaml"))
    assert len(configs) == 2  # one per trial: no shared config.yaml is overwritten
    capsys.readouterr()
    retrain = ["--config", str(EX / "fashion_mnist/retrain.yaml"), *SMALL, "--trainer.max_epochs=1"]
    with pytest.raises(SystemExit) as exc:
        main(["sweep-best", "grid", "--", *retrain])
    assert exc.value.code == 0
    assert f"best: {trials[0].path.relative_to(tmp_path)} " in capsys.readouterr().out
    logs = sorted((tmp_path / "runs/fashion_mnist/retrain").rglob("config.yaml"))
    assert Path(yaml.safe_load(logs[0].read_text())["replay"]["process"]) == trials[
        0
    ].path.relative_to(tmp_path)


def test_the_retrain_of_a_trial_gets_its_kd_and_review_pathways(tmp_path):
    """A trial searched with the KD and review pathways (the recommended space) is
    retrained with them: ``search_space_args`` switches them on (and off) by its names."""
    from conftest import make_module

    from distpro_lightning.cli.sweeps import search_space_args

    searched = make_module(transforms=["conv_bn"], response_kd=True, review_kd=True)
    args = search_space_args(searched.new_process({}))
    assert "--model.init_args.distillation.response_kd=true" in args
    assert "--model.init_args.distillation.review_kd=true" in args
    from distpro_lightning.cli.main import cli_main

    cli = cli_main(
        ["--config", str(EX / "fashion_mnist/retrain.yaml"), *args,
         "--model.init_args.teacher", "resnet14", "--model.init_args.student", "resnet8",
         "--model.init_args.distillation.input_shape", "[1, 8, 8]", "--trainer.logger", "false",
         "--trainer.default_root_dir", str(tmp_path), "--replay.enabled", "false"],
        run=False,
    )  # fmt: skip
    assert cli.model.pathway_names == searched.pathway_names
    plain = search_space_args(make_module(transforms=["conv_bn"]).new_process({}))
    assert "--model.init_args.distillation.response_kd=false" in plain


def test_sweep_commands_refuse_fit_arguments_they_would_silently_override():
    from distpro_lightning.cli.sweeps import refuse_set_keys, sweep_grid_main

    ran = []
    with pytest.raises(ValueError) as err:
        sweep_grid_main(
            [
                "grid",
                "--param",
                "search.alpha.lr=0.1",
                "--",
                "-c",
                "x.yaml",
                "--trainer.logger",
                "f",
            ],
            fit=ran.append,
        )
    assert str(err.value) == (
        "distpro sweep-grid sets --trainer.logger itself (each trial's folder, CSV log and "
        "process file, which sweep-best reads); drop it from the fit arguments after --."
    )
    assert ran == []  # refused before any trial
    ours = ["--replay.process=best.json", "--model.init_args.distillation.review_kd=true"]
    with pytest.raises(ValueError, match=r"sets --replay.process itself"):
        refuse_set_keys("sweep-best", ["--replay.process=mine.json"], ours, "why")
    refuse_set_keys("sweep-best", ["--config", "retrain.yaml", "--trainer.max_epochs=1"], ours, "")


# ---------------------------------------------------------------- issue 37, cases 12, 13, 19
def test_a_grid_key_given_twice_is_refused_and_list_values_stay_whole():
    from distpro_lightning.cli.sweeps import grid_trials

    with pytest.raises(ValueError, match=r"--param search.alpha.lr is given twice; give all"):
        grid_trials(["search.alpha.lr=0.01", "search.alpha.lr=0.3"])
    trials = grid_trials(["transforms=[conv_bn,attn2],[conv_bn]", "search.alpha.lr=0.1"])
    assert trials == [
        ["--transforms=[conv_bn,attn2]", "--search.alpha.lr=0.1"],
        ["--transforms=[conv_bn]", "--search.alpha.lr=0.1"],
    ]


def test_sweep_commands_without_a_model_say_so(tmp_path, capsys):
    for command in ("sweep-grid", "sweep-best"):
        argv = [
            command,
            str(tmp_path),
            "--param",
            "search.alpha.lr=0.1",
            "--",
            "--trainer.max_steps=1",
        ]
        if command == "sweep-best":
            argv.remove("--param"), argv.remove("search.alpha.lr=0.1")
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 1
        err = capsys.readouterr().err
        assert f"distpro {command}: the fit arguments after -- give no model" in err
        assert err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_sweep_best_says_when_it_ranks_two_sweeps_together(tmp_path, capsys):
    from distpro_lightning.cli.sweeps import sweep_grid_main

    fit = ["--config", "search.yaml"]
    sweep_grid_main([str(tmp_path / "a"), "--param", "search.alpha.lr=0.1", "--", *fit], list)
    sweep_grid_main([str(tmp_path / "a"), "--param", "search.alpha.lr=0.1", "--", *fit], list)
    norm = {"name": "biased_softmax", "bias": 1.0, "scale": 1.0}
    trial = tmp_path / "a" / "trial_0"
    trial.mkdir(parents=True)
    DistillationProcess(["a", "b"], norm, [[0.0, 1.0]], provenance={"search_val_loss": 0.5}).save(
        trial / "process.json"
    )
    with pytest.raises(SystemExit):
        main(["sweep-best", str(tmp_path)])
    assert "sweeps, ranked together" not in capsys.readouterr().out  # one sweep, run twice
    sweep_grid_main([str(tmp_path / "b"), "--param", "search.alpha.lr=0.3", "--", *fit], list)
    with pytest.raises(SystemExit):
        main(["sweep-best", str(tmp_path)])
    out = capsys.readouterr().out
    assert f"warning: {tmp_path} holds the trials of 2 sweeps, ranked together" in out
    assert "search.alpha.lr=0.3" in out and "search.alpha.lr=0.1" in out


def test_sweep_best_retrains_a_file_that_records_no_transform_kinds(tmp_path):
    """``transform_kinds: null`` (optional in the format) was a TypeError traceback in
    ``sweep-best -- FIT ARGS``: the kinds come from the pathway names instead."""
    from distpro_lightning.cli.sweeps import search_space_args, trial_settings

    norm = {"name": "biased_softmax", "bias": 1.0, "scale": 1.0}
    names = ["a->b:conv_bn", "a->c:attn2", "a->b:attn2", "logits->logits:kd"]
    process = DistillationProcess(names, norm, [[1.0] * 4])
    assert process.transform_kinds is None
    args = search_space_args(process)
    assert "--model.init_args.distillation.transforms=[conv_bn, attn2]" in args
    assert "--model.init_args.distillation.response_kd=true" in args
    assert "transforms=[conv_bn, attn2] " in trial_settings(process)
    recorded = DistillationProcess(names, norm, [[1.0] * 4], transform_kinds=["attn2", "conv_bn"])
    assert "--model.init_args.distillation.transforms=[attn2, conv_bn]" in search_space_args(
        recorded
    )
