"""Every shipped config parses, prints, and runs a fast_dev_run on data of the right shape."""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from distpro_lightning import DistillationProcess, ProcessScheduleCallback, ProcessSearchCallback
from distpro_lightning.cli.main import cli_main, main
from distpro_lightning.data.fake import make_fake_cifar100, make_fake_image_folder

ROOT = Path(__file__).resolve().parents[2]
EX = ROOT / "examples"
# The shipped configs are written for long runs; run here for 1-3 steps, a sparse search's
# (every_n_steps=4) alpha moves once, which the search says: expected of every such smoke run.
SMOKE_RUN_WARNING = "ignore:search.schedule.every_n_steps=.* updates alpha once:UserWarning"
pytestmark = pytest.mark.filterwarnings(SMOKE_RUN_WARNING)
RUNNABLE = sorted(
    p
    for p in EX.rglob("*.yaml")
    if "sweeps" not in p.parts
    and "pairs" not in p.parts
    and not p.name.startswith("wandb")
    and not p.name.startswith("pair_")
    # an overlay on search.yaml or retrain.yaml, not a whole config: tested as one in
    # test_fashion_mnist_recipe_overlays_apply_what_they_name
    and not p.name.startswith("recipe_")
)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Every config runs in its own folder: their relative outputs (runs/..., the teacher
    checkpoints of ModelCheckpoint) never touch the checkout."""
    monkeypatch.chdir(tmp_path)


def _fit(args: list[str]):
    return cli_main(["fit", *args])


def _quick(tmp: Path, validates: bool = True) -> list[str]:
    # one step, no logger or checkpoint (fast_dev_run would write no process file); each fit
    # in a folder of its own, where it saves its config.yaml. A teacher or retrain config has
    # no validation split (validates=False): a validation limit would only be warned about.
    root = tempfile.mkdtemp(dir=tmp, prefix="run_")
    validation = ["--trainer.limit_val_batches", "1"] if validates else []
    return [
        "--trainer.max_steps",
        "1",
        *validation,
        "--trainer.limit_test_batches",
        "1",
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.logger",
        "false",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.strategy",
        "auto",
        "--trainer.precision",
        "32-true",
        "--trainer.default_root_dir",
        root,
        "--trainer.enable_progress_bar",
        "false",
    ]


@pytest.mark.parametrize("config", RUNNABLE, ids=lambda p: str(p.relative_to(EX)))
def test_print_config(config, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", "--config", str(config), "--print_config"])
    assert exc.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("distpro_lightning.")
    assert printed["data"]["class_path"].startswith("distpro_lightning.data.")


def _teacher_args(name: str) -> list[str]:
    return ["--model.init_args.teacher", name]


def test_fashion_mnist_configs_run(tmp_path):
    # 128 images: the search-validation split (a fifth) holds a whole batch of 16
    data = ["--data.init_args.subset", "128", "--data.init_args.batch_size", "16"]
    teacher = EX / "fashion_mnist/teacher.yaml"
    cli = _fit(["--config", str(teacher), *_quick(tmp_path, validates=False), *data])
    assert cli.trainer.global_step == 1
    process = tmp_path / "process.json"
    cli = _fit(
        [
            "--config",
            str(EX / "fashion_mnist/search.yaml"),
            *_quick(tmp_path),
            *data,
            *_teacher_args("resnet20"),
            "--search.output.save_path",
            str(process),
        ]
    )
    search = [c for c in cli.trainer.callbacks if isinstance(c, ProcessSearchCallback)]
    assert len(search) == 1 and search[0].alpha.lr == 0.05
    assert search[0].schedule.every_n_steps == 4 and search[0].schedule.proxy is True
    assert DistillationProcess.load(process).num_pathways == 11  # the recommended space
    cli = _fit(
        [
            "--config",
            str(EX / "fashion_mnist/retrain.yaml"),
            *_quick(tmp_path, validates=False),
            *data,
            *_teacher_args("resnet20"),
            "--replay.process",
            str(process),
        ]
    )
    replay = [c for c in cli.trainer.callbacks if isinstance(c, ProcessScheduleCallback)]
    assert len(replay) == 1 and replay[0].mode == "process"
    assert not any(isinstance(c, ProcessSearchCallback) for c in cli.trainer.callbacks)


def test_fashion_mnist_reviewkd_config_trains_tuned_reviewkd(tmp_path):
    """The no-search option the evidence run's rule points to so far (README): ReviewKD at
    the weight and warm-up it was tuned to on resnet20 -> resnet8."""
    from distpro_lightning.baselines.reviewkd import ReviewKDModule

    data = ["--data.init_args.subset", "128", "--data.init_args.batch_size", "16"]
    config = EX / "fashion_mnist/reviewkd.yaml"
    cli = _fit(["--config", str(config), *_quick(tmp_path, validates=False), *data,
                *_teacher_args("resnet20")])  # fmt: skip
    assert isinstance(cli.model, ReviewKDModule) and cli.trainer.global_step == 1
    assert cli.model.review_weight == 8.0 and cli.model.warmup_epochs == 0.42


CIFAR100_PAIRS = sorted((EX / "cifar100/pairs").glob("*.yaml"))
#: the pair whose search and retrain run in the default tier (the smallest models); the
#: other pairs' runs are in the slow tier, and every pair is built in the default tier
#: (test_every_cifar100_pair_builds_its_27_pathways)
QUICK_CIFAR100_PAIR = "resnet110-resnet32"


@pytest.mark.parametrize("pair", CIFAR100_PAIRS, ids=lambda p: p.stem)
def test_every_cifar100_pair_builds_its_27_pathways(pair):
    """Each pair file, with the search config, parses and builds its module (teacher,
    student, and the 27 heads from the models' probed shapes); the retrain config builds the
    same pair (test_cifar100_pairs_search_and_retrain)."""
    teacher, student = pair.stem.split("-")
    args = ["--config", str(EX / "cifar100/search.yaml"), "--config", str(pair)]
    cli = cli_main([*args, *_teacher_args(teacher)], run=False)
    assert cli.model.num_pathways == 27  # 3 transforms x 9 connections
    assert cli.model.hparams.student == student


@pytest.mark.parametrize(
    "pair",
    [
        p if p.stem == QUICK_CIFAR100_PAIR else pytest.param(p, marks=pytest.mark.slow)
        for p in CIFAR100_PAIRS
    ],
    ids=lambda p: p.stem,
)
def test_cifar100_pairs_search_and_retrain(pair, tmp_path):
    data_dir = make_fake_cifar100(tmp_path / "data", n_train=20, n_test=8)
    teacher = pair.stem.split("-")[0]
    data = [
        "--data.init_args.data_dir",
        str(data_dir),
        "--data.init_args.batch_size",
        "4",
        "--data.init_args.num_workers",
        "0",
    ]
    process = tmp_path / "p.json"
    _fit(
        [
            "--config",
            str(EX / "cifar100/search.yaml"),
            "--config",
            str(pair),
            *_quick(tmp_path),
            *data,
            *_teacher_args(teacher),
            "--search.output.save_path",
            str(process),
        ]
    )
    proc = DistillationProcess.load(process)
    assert proc.num_pathways == 27  # 3 transforms x 9 connections
    cli = _fit(
        [
            "--config",
            str(EX / "cifar100/retrain.yaml"),
            "--config",
            str(pair),
            *_quick(tmp_path, validates=False),
            *data,
            *_teacher_args(teacher),
            "--replay.process",
            str(process),
        ]
    )
    assert cli.model.hparams.optimizer["milestones"] == [150, 180, 210]


def test_cifar100_teacher_config(tmp_path):
    data_dir = make_fake_cifar100(tmp_path / "data", n_train=20, n_test=8)
    cli = _fit(
        [
            "--config",
            str(EX / "cifar100/teacher.yaml"),
            *_quick(tmp_path, validates=False),
            "--data.init_args.data_dir",
            str(data_dir),
            "--data.init_args.batch_size",
            "4",
            "--data.init_args.num_workers",
            "0",
        ]
    )
    assert cli.trainer.global_step == 1


@pytest.mark.slow  # the ImageNet models (ResNet-50's 15 heads hold 71 M parameters)
@pytest.mark.parametrize("pair", [None, "pair_resnet50_mobilenet_v2.yaml"])
def test_imagenet_configs(pair, tmp_path):
    # 4 images a class: the search-validation split holds a whole batch of 2
    data_dir = make_fake_image_folder(tmp_path / "imgs", num_classes=3, per_class=4, size=40)
    extra = ["--config", str(EX / "imagenet" / pair)] if pair else []
    teacher = "tv_resnet50" if pair else "tv_resnet34"
    data = [
        "--data.init_args.data_dir", str(data_dir), "--data.init_args.batch_size", "2",
        "--data.init_args.num_workers", "0", "--data.init_args.image_size", "64",
    ]  # fmt: skip
    process = tmp_path / "p.json"
    with _big_heads_warned(pair):
        cli = _fit(
            ["--config", str(EX / "imagenet/search.yaml"), *extra, *_quick(tmp_path), *data,
             *_teacher_args(teacher), "--search.output.save_path", str(process)]
        )  # fmt: skip
    assert cli.model.num_pathways == 15  # 5 taps, lower-to-higher, 1 transform
    with _big_heads_warned(pair):
        _fit(
            ["--config", str(EX / "imagenet/retrain.yaml"), *extra,
             *_quick(tmp_path, validates=False), *data, *_teacher_args(teacher),
             "--model.init_args.distillation.input_shape", "[3, 64, 64]",
             "--replay.process", str(process)]
        )  # fmt: skip
    teacher_tiny = ["--config", str(EX / "imagenet/teacher_tiny.yaml")]
    _fit([*teacher_tiny, *_quick(tmp_path, validates=False), *data])


def _big_heads_warned(pair: str | None):
    """ResNet-50's pairs: the module says that their heads outweigh the student."""
    if pair is None or "resnet50" not in pair:
        return contextlib.nullcontext()
    return pytest.warns(UserWarning, match=r"pathway heads hold [\d,]+ parameters")


def _fake_teacher_checkpoint(path: Path) -> None:
    from distpro_lightning.models import create

    model = create("resnet20", num_classes=10, in_channels=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"model": "resnet20", "num_classes": 10, "in_channels": 1},
        },
        path,
    )


def _sweep_args(sweep: dict, pick: int) -> list[str]:
    """The argument list a W&B agent builds from ``${args}``: ``--name=value`` per parameter."""
    out = []
    for name, spec in sweep["parameters"].items():
        if "values" in spec:
            value = spec["values"][pick % len(spec["values"])]
        else:
            value = spec["min"] if pick % 2 == 0 else spec["max"]
        out.append(f"--{name}={value}")
    return out


@pytest.mark.parametrize("pick", [0, 1, 2])
def test_sweep_arguments_parse(pick, tmp_path, monkeypatch):
    sweep = yaml.safe_load((EX / "sweeps/search.yaml").read_text())
    monkeypatch.chdir(tmp_path)  # the configs' relative paths (teacher checkpoint) resolve here
    _fake_teacher_checkpoint(tmp_path / "runs/fashion_mnist/teacher/teacher.ckpt")
    args = []
    for item in sweep["command"]:
        if item in ("${program}", "fit"):  # run=False below: no subcommand
            continue
        if item == "${args}":
            args += _sweep_args(sweep, pick)
        elif item.endswith(".yaml"):
            args.append(str(ROOT / item))
        else:
            args.append(item)
    cli = cli_main(args, run=False)
    cfg = cli.config
    for name, spec in sweep["parameters"].items():
        key = name
        value = cfg
        for part in key.split("."):
            value = value[part]
        if "values" in spec:
            expected = spec["values"][pick % len(spec["values"])]
            if isinstance(expected, str) and expected.startswith("["):
                expected = yaml.safe_load(expected)
            assert value == expected, name
    search = [c for c in cli.trainer.callbacks if isinstance(c, ProcessSearchCallback)]
    assert len(search) == 1 and search[0].enabled
    assert search[0].alpha.lr == pytest.approx(cfg["search"]["alpha"]["lr"])


def test_wandb_offline_run_logs_scalars_and_images(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    _fit(
        [
            "--config",
            str(EX / "fashion_mnist/search.yaml"),
            "--config",
            str(EX / "fashion_mnist/wandb.yaml"),
            "--trainer.max_steps",
            "3",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
            "--data.init_args.subset",
            "128",
            "--data.init_args.batch_size",
            "16",
            *_teacher_args("resnet20"),
            "--search.output.save_path",
            str(tmp_path / "p.json"),
            "--trainer.log_every_n_steps",
            "1",
        ]
    )
    import wandb

    wandb.finish()
    wandb.teardown()  # the service writes the records asynchronously: wait for all of them
    runs = list(tmp_path.rglob("offline-run-*"))
    assert runs, list(tmp_path.rglob("*"))[:20]
    files = runs[0] / "files"
    # the run's record file (protobuf) holds the logged keys verbatim
    records = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in (b"search/val_loss", b"train/loss", b"alpha_weight/layer1->layer1:conv_bn"):
        assert key in records, key
    images = list((files / "media" / "images").rglob("*.png"))
    assert {p.name.split("_")[0] for p in images} >= {"lines", "heatmap"}, images
    assert all("search" in p.parts for p in images)


def test_tensorboard_logger_gets_process_figures(tmp_path):
    _fit(
        [
            "--config",
            str(EX / "fashion_mnist/search.yaml"),
            "--trainer.logger",
            "lightning.pytorch.loggers.TensorBoardLogger",
            "--trainer.logger.save_dir",
            str(tmp_path),
            "--trainer.max_steps",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.log_every_n_steps",
            "1",
            "--data.init_args.subset",
            "128",
            "--data.init_args.batch_size",
            "16",
            *_teacher_args("resnet20"),
            "--search.output.save_path",
            str(tmp_path / "p.json"),
        ]
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = next(tmp_path.rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    assert "search/process/lines" in acc.Tags()["images"]
    assert any(tag.startswith("alpha_weight/") for tag in acc.Tags()["scalars"])


def _retrain_args(tmp: Path, *extra: str) -> list[str]:
    """A short retrain (2 steps, no replay) of the Fashion-MNIST example."""
    return [
        "--config", str(EX / "fashion_mnist/retrain.yaml"), "--trainer.max_steps", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp),
        "--data.init_args.subset", "64", "--data.init_args.batch_size", "16",
        *_teacher_args("resnet20"), "--replay.enabled", "false", *extra,
    ]  # fmt: skip


def test_short_retrain_skips_validation_quietly_and_writes_its_metrics(tmp_path):
    """A retrain has no validation split: no warning about an empty validation loader;
    shorter than log_every_n_steps, it still writes metrics.csv (the epoch's train loss)."""
    logger = ["--trainer.logger.init_args.save_dir", str(tmp_path)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = _fit(_retrain_args(tmp_path, *logger))
    messages = [str(w.message) for w in caught]
    assert not any("across ranks is zero" in m or "val_dataloader" in m for m in messages)
    assert cli.trainer.limit_val_batches == 0 and cli.trainer.global_step == 2
    metrics = Path(cli.trainer.logger.log_dir) / "metrics.csv"
    rows = list(csv.DictReader(metrics.read_text().splitlines()))
    assert [r["epoch"] for r in rows if r["train/loss_epoch"]] == ["0"]


def test_a_validation_limit_on_a_retrain_without_validation_is_said_to_have_no_effect(tmp_path):
    args = _retrain_args(tmp_path, "--trainer.logger", "false", "--trainer.limit_val_batches", "3")
    with pytest.warns(UserWarning, match=r"limit_val_batches=3 has no effect: .*val_fraction"):
        cli = _fit(args)
    assert cli.trainer.limit_val_batches == 0


def test_fits_sharing_a_folder_never_overwrite_each_others_config(tmp_path):
    """Two fits without a logger in one default_root_dir: the second refuses to replace
    the first's config.yaml and names the fix."""
    first = _fit(_retrain_args(tmp_path, "--trainer.logger", "false"))
    saved = (tmp_path / "config.yaml").read_text()
    lr = yaml.safe_load(saved)["model"]["init_args"]["optimizer"]["lr"]
    assert lr == first.model.hparams.optimizer["lr"]
    with pytest.raises(FileExistsError, match="--trainer.default_root_dir") as exc:
        _fit(
            _retrain_args(
                tmp_path, "--trainer.logger", "false", "--model.init_args.optimizer.lr", "0.5"
            )
        )
    assert "config.yaml" in str(exc.value)
    assert (tmp_path / "config.yaml").read_text() == saved


def test_distpro_help_and_process_subcommand(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--search.alpha.lr" in out and "--replay.mode" in out
    assert "``" not in out  # the docstrings' literals print as `x`
    assert "`save_path`" in out
    proc = DistillationProcess(["a->b:conv_bn"], {"name": "softmax"}, torch.ones(3, 1))
    proc.save(tmp_path / "p.json")
    with pytest.raises(SystemExit) as exc:
        main(["process", "summary", str(tmp_path / "p.json")])
    assert exc.value.code == 0
    assert "a->b:conv_bn" in capsys.readouterr().out
    assert os.path.exists(tmp_path / "p.json")


TIMM_PAIRS = {
    None: ("timm/resnet34", "timm/resnet18", 10),
    "pair_resnet50_mobilenetv2.yaml": ("timm/resnet50", "timm/mobilenetv2_100", 10),
    "pair_vit_b_deit_tiny.yaml": (
        "timm/vit_base_patch16_224?img_size=32,patch_size=8,depth=3",
        "timm/deit_tiny_patch16_224?img_size=32,patch_size=8,depth=3",
        9,
    ),
}


@pytest.mark.slow  # the ImageNet models through timm (ResNet-50's heads: 68 M parameters)
@pytest.mark.parametrize("pair", list(TIMM_PAIRS), ids=lambda p: p or "resnet34-resnet18")
def test_imagenet_timm_configs_search_then_replay(pair, tmp_path):
    """The paper's ImageNet pairs through timm at a tiny size (32 px, random weights, the
    ViTs 3 blocks deep): a proxy search, then its replay, through distpro fit."""
    pytest.importorskip("timm")
    teacher, student, pathways = TIMM_PAIRS[pair]
    data_dir = make_fake_image_folder(tmp_path / "imgs", num_classes=3, per_class=5, size=32)
    extra = ["--config", str(EX / "imagenet_timm" / pair)] if pair else []
    common = [
        *extra,
        "--data.init_args.data_dir", str(data_dir), "--data.init_args.batch_size", "2",
        "--data.init_args.num_workers", "0", "--data.init_args.image_size", "32",
        "--model.init_args.distillation.input_shape", "[3, 32, 32]",
        "--model.init_args.teacher", teacher, "--model.init_args.student", student,
    ]  # fmt: skip
    process = tmp_path / "p.json"
    with _big_heads_warned(pair):
        cli = _fit(
            ["--config", str(EX / "imagenet_timm/search.yaml"), *common, *_quick(tmp_path),
             "--search.output.save_path", str(process)]
        )  # fmt: skip
    assert cli.model.num_pathways == pathways
    saved = DistillationProcess.load(process)
    assert saved.provenance["run_settings"]["proxy"] is True
    if pair and "vit" in pair:
        assert cli.model.student_tap_names == ["blocks.0", "blocks.1", "blocks.2"]
        assert cli.model.student_tap_shapes[0] == (17, 192)  # 4x4 patches + the class token
    with _big_heads_warned(pair):
        cli = _fit(
            ["--config", str(EX / "imagenet_timm/retrain.yaml"), *common,
             *_quick(tmp_path, validates=False), "--replay.process", str(process)]
        )  # fmt: skip
    replay = [c for c in cli.trainer.callbacks if isinstance(c, ProcessScheduleCallback)]
    assert len(replay) == 1 and replay[0].process.pathway_names == saved.pathway_names


def test_vit_pair_file_models_take_the_search_and_the_retrain_image_size():
    """pair_vit_b_deit_tiny.yaml serves search.yaml (64 px) and retrain.yaml (224 px): its
    teacher and student names build models that take both, with 17 and 197 tokens."""
    pytest.importorskip("timm")
    from distpro_lightning.models import create

    init = yaml.safe_load((EX / "imagenet_timm/pair_vit_b_deit_tiny.yaml").read_text())
    init = init["model"]["init_args"]
    for phase, classes in (("search", 200), ("retrain", 1000)):
        size = yaml.safe_load((EX / f"imagenet_timm/{phase}.yaml").read_text())
        size = size["model"]["init_args"]["distillation"]["input_shape"][-1]
        for name in (init["student"], init["teacher_model"]):
            model = create(name, classes, 3).eval()
            tokens: list[int] = []
            model.blocks[0].register_forward_hook(lambda m, i, o, t=tokens: t.append(o.shape[1]))
            with torch.no_grad():
                assert model(torch.zeros(1, 3, size, size)).shape == (1, classes)
            assert tokens == [(size // 16) ** 2 + 1], (phase, name)


def test_library_errors_under_distpro_fit_come_out_as_themselves(tmp_path, monkeypatch, capsys):
    """A constructor's error under distpro fit --config is the library's own message: one
    line on the console, the exception itself in Python (not a union traceback)."""
    bad = [
        "--config",
        str(EX / "fashion_mnist/search.yaml"),
        "--model.init_args.student",
        "resnet9",
    ]
    with pytest.raises(ValueError, match="Unknown model 'resnet9'. Did you mean 'resnet8'"):
        cli_main(["fit", *bad])
    capsys.readouterr()
    # the console script as the shell runs it: main() reads sys.argv (an uncaught exception
    # would end the process with a traceback: here it would escape pytest.raises(SystemExit))
    monkeypatch.setattr("sys.argv", ["distpro", "fit", *bad])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "distpro: error: Unknown model 'resnet9'" in err
    assert "Union subtypes" not in err and "Traceback" not in err


def test_fashion_mnist_recipe_overlays_apply_what_they_name(tmp_path):
    """The README's recipes as config overlays: the full search (alpha at every step, no
    proxy, the retrain's length) on search.yaml, and the space at uniform weights (no
    process) on retrain.yaml."""
    # 80 images: the search-validation split (a fifth) holds a whole batch of 16
    data = ["--data.init_args.subset", "80", "--data.init_args.batch_size", "16"]
    base = str(EX / "fashion_mnist/search.yaml")
    full = str(EX / "fashion_mnist/recipe_full_search.yaml")
    process = tmp_path / "process.json"
    cli = _fit(
        ["--config", base, "--config", full, *_quick(tmp_path), *data,
         *_teacher_args("resnet20"), "--search.output.save_path", str(process)]
    )  # fmt: skip
    search = next(c for c in cli.trainer.callbacks if isinstance(c, ProcessSearchCallback))
    assert search.schedule.every_n_steps == 1 and search.schedule.proxy is False
    assert search.alpha.lr == 0.05  # the rest of search.yaml is kept
    assert yaml.safe_load(Path(full).read_text())["trainer"]["max_epochs"] == 5
    retrain = str(EX / "fashion_mnist/retrain.yaml")
    uniform = str(EX / "fashion_mnist/recipe_uniform.yaml")
    cli = _fit(
        ["--config", retrain, "--config", uniform, *_quick(tmp_path, validates=False), *data,
         *_teacher_args("resnet20")]
    )  # fmt: skip
    replay = next(c for c in cli.trainer.callbacks if isinstance(c, ProcessScheduleCallback))
    assert replay.mode == "uniform" and replay.process is None
    weights = cli.model.alpha_weights().detach()
    assert len(weights) == 11 and torch.allclose(weights, torch.ones(11))
