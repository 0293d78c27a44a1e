"""Issue 13, table-driven: each bad or unusual input, the error text it must give (or the
correct result), and that nothing was lost (the files of the run are still there, byte for
byte, and still load). The cases of the search callback live with its own tests."""

from __future__ import annotations

import torch

torch.set_num_threads(1)

import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from torch import nn  # noqa: E402

from distpro_lightning import DistillationProcess, ProcessScheduleCallback  # noqa: E402
from distpro_lightning.baselines.reviewkd import ReviewKDModule  # noqa: E402
from distpro_lightning.cli.main import cli_main, main  # noqa: E402
from distpro_lightning.models import create  # noqa: E402
from distpro_lightning.modules.checkpoints import load_state_file, resolve_teacher  # noqa: E402
from distpro_lightning.pathways.taps import TapError, explained_input_errors, probe_shapes  # noqa: E402
from distpro_lightning.search.paths import check_overwrite, check_save_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FASHION = ROOT / "examples" / "fashion_mnist"
RUN = "run.json"  # every case starts with this process file of run "run-a" in its folder
NAMES = ["layer1->layer1:conv_bn", "layer2->layer2:conv_bn"]


def good_process(run_id: str | None = "run-a") -> DistillationProcess:
    return DistillationProcess(
        NAMES,
        {"name": "biased_softmax", "bias": 1.0, "scale": 2.0},
        [[0.0, 1.0], [0.5, 0.25], [1.0, -1.0]],
        steps_per_epoch=3,
        provenance={"created": "2025-01-01T00:00:00+00:00"},
        run_id=run_id,
    )


def edited(tmp: Path, **fields) -> Path:
    """The run's file with some fields replaced (``None`` deletes), as ``bad.json``."""
    data = json.loads((tmp / RUN).read_text())
    for key, value in fields.items():
        if value is None:
            data.pop(key)
        elif key in ("bias", "scale"):
            data["normalization"][key] = value
        else:
            data[key] = value
    out = tmp / "bad.json"
    out.write_text(json.dumps(data))
    return out


def load_edited(**fields) -> Callable[[Path], object]:
    return lambda tmp: DistillationProcess.load(edited(tmp, **fields))


def distpro(*argv: str) -> tuple[int, str]:
    """Run the ``distpro`` entry point; its exit code and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        main(list(argv))
    return exc.value.code, err.getvalue()


# --------------------------------------------------------------------------- cases
def skipped_round_trip(tmp: Path) -> None:
    p = good_process()
    p.append(torch.tensor([1.0, -1.0]), skipped=True)
    p.append(torch.tensor([2.0, 0.0]))
    p.save(tmp / "skip.json")
    q = DistillationProcess.load(tmp / "skip.json")
    assert q.skipped_steps == [3] and q.run_id == "run-a"
    assert json.loads((tmp / "skip.json").read_text())["skipped_steps"] == [3]
    assert q.fingerprint() == p.fingerprint() == good_process().with_rows(p.logits).fingerprint()
    assert q.remap(NAMES[::-1]).skipped_steps == [3]  # same rows, other column order
    assert q.interpolate(9).skipped_steps == [] and q.interpolate(9).run_id is None
    q.truncate(3)
    assert q.skipped_steps == []


def version_1_loads(tmp: Path) -> None:
    v1 = edited(tmp, version=1, run_id=None, skipped_steps=None)
    q = DistillationProcess.load(v1)
    assert q.run_id is None and q.skipped_steps == [] and len(q) == 3


def dead_writers_temps_are_removed(tmp: Path) -> None:
    target = tmp / RUN
    # A writer killed (SIGKILL) between writing its temporary file and the rename.
    code = (
        "import os, sys, time\n"
        "os.replace = lambda *a: time.sleep(600)\n"
        "from distpro_lightning import DistillationProcess\n"
        f"DistillationProcess.load({str(target)!r}).save({str(target)!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.time() + 120
    while not list(tmp.glob(f".{RUN}.{child.pid}-*.tmp")):
        assert time.time() < deadline and child.poll() is None, "the writer never wrote"
        time.sleep(0.05)
    child.kill()
    child.wait()
    left = list(tmp.glob(f".{RUN}.{child.pid}-*.tmp"))
    assert len(left) == 1 and left[0].stat().st_size > 100  # full size, hidden
    mine = tmp / f".{RUN}.{os.getpid()}-abcdefgh.tmp"  # our own pid: from an earlier life
    alive = tmp / f".{RUN}.{os.getppid()}-abcdefgh.tmp"  # a live writer: kept
    other = tmp / f".other.json.{child.pid}-abcdefgh.tmp"  # another target: kept
    legacy_old, legacy_new = tmp / f".{RUN}.abcdefgh.tmp", tmp / f".{RUN}.ijklmnop.tmp"
    for f in (mine, alive, other, legacy_old, legacy_new):
        f.write_text("x")
    os.utime(legacy_old, (time.time() - 7200, time.time() - 7200))
    good_process().save(target)
    remaining = {p.name for p in tmp.iterdir()}
    assert remaining == {RUN, alive.name, other.name, legacy_new.name}, remaining


def read_only_folder(tmp: Path) -> object:
    if os.geteuid() != 0:
        folder = tmp / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return check_save_path(folder / "p.json")
    if os.access("/sys", os.W_OK) and not Path("/sys").is_mount():
        pytest.skip("no read-only folder for root here")
    return check_save_path("/sys/distpro-test/p.json")


def tilde_expanded(tmp: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp))
        assert check_save_path("~/out/p.json") == tmp / "out" / "p.json"
    assert (tmp / "out").is_dir() and list((tmp / "out").iterdir()) == []  # probe removed


def mixin_without_input_shape(tmp: Path) -> object:
    from lightning.pytorch import LightningModule

    from distpro_lightning import DistProMixin

    class User(DistProMixin, LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.student = mlp()
            self.configure_distillation(mlp(), student_taps=["1"], teacher_taps=["1"])

    return User()


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


def module(**kw) -> Callable[[Path], object]:
    from distpro_lightning import DistProModule

    args = dict(student="resnet8", teacher="resnet14", num_classes=10, in_channels=1)
    args.update(input_shape=[1, 8, 8], transforms=["conv_bn"], log_pathway_losses=False)
    args.update(kw)
    return lambda tmp: DistProModule(**args)


def forward_of_other_channels(tmp: Path) -> object:
    model, x = create("resnet8", 10, in_channels=3), torch.zeros(2, 1, 8, 8)
    with explained_input_errors("student", model, x):
        return model(x)


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.block(x))


def scale_warning(tmp: Path) -> None:
    m = module(transforms=["conv_bn"], connections=[(0, 0), (1, 1)])(tmp)
    p = DistillationProcess(m.pathway_names, {"name": "biased_softmax", "scale": 5.0}, [[0, 0]])
    with pytest.warns(UserWarning, match=r"weight scale 5 but the module .* by 2"):
        ProcessScheduleCallback(process=p).check(m)
    p2 = DistillationProcess(m.pathway_names, {"name": "biased_softmax", "scale": 2.0}, [[0, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(ProcessScheduleCallback(process=p2).check(m).logits, p2.logits)


def check_without_trainer(tmp: Path) -> object:
    m = module()(tmp)  # 9 pathways; the run's file has 2
    return ProcessScheduleCallback(process=str(tmp / RUN)).check(m)


def corrupt(data: bytes, name: str = "t.ckpt") -> Callable[[Path], object]:
    def act(tmp: Path) -> object:
        (tmp / name).write_bytes(data)
        return load_state_file(tmp / name)

    return act


def truncated_checkpoint(tmp: Path) -> object:
    torch.save({"w": torch.ones(64)}, tmp / "full.pt")
    raw = (tmp / "full.pt").read_bytes()
    return corrupt(raw[: len(raw) // 2])(tmp)


def pickled_object(tmp: Path) -> object:
    import argparse

    torch.save({"args": argparse.Namespace(lr=0.1)}, tmp / "obj.pt")
    return load_state_file(tmp / "obj.pt")


def cli_fit(*extra: str, teacher: str | None = "resnet20") -> Callable[[Path], object]:
    """``distpro fit`` up to the point where training would start (``run=False``: classes
    are built, nothing is trained)."""

    def act(tmp: Path) -> object:
        model = ["--model.init_args.teacher", teacher] if teacher else []
        return cli_main(
            [*extra, *model, "--trainer.max_steps", "1", "--trainer.logger", "false"]
            + ["--trainer.default_root_dir", str(tmp)],
            run=False,
        )

    return act


def cli_both_sections(tmp: Path) -> None:
    err = io.StringIO()
    act = cli_fit("--config", str(FASHION / "search.yaml"), "--replay.mode", "final")
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        act(tmp)
    assert exc.value.code == 2
    assert "Both the search: and the replay: sections are on" in err.getvalue()
    assert "--replay.enabled false" in err.getvalue()


def cli_sections(tmp: Path) -> None:
    cfg = ["--config", str(FASHION / "retrain.yaml"), "--replay.enabled", "false"]
    on = cli_fit(*cfg, "--config", json.dumps({"replay": {"process": str(tmp / RUN)}}))(tmp)
    assert on.config["replay"]["enabled"] is False  # an explicit false wins
    cfg = ["--config", str(FASHION / "teacher.yaml"), "--replay.process", str(tmp / RUN)]
    on = cli_fit(*cfg, teacher=None)(tmp)
    assert on.config["replay"]["enabled"] is True and not on.config["search"]["enabled"]
    assert [type(c).__name__ for c in on.trainer.callbacks].count("ProcessScheduleCallback") == 1


@dataclass
class Case:
    id: str
    act: Callable[[Path], object]
    error: type[BaseException] | None = None
    says: tuple[str, ...] = ()
    never_says: tuple[str, ...] = ("weights_only=False", "weights_only` set to `False")


CASES = [
    # ---- process files: validation, versions, directories
    Case("version true", load_edited(version=True), ValueError, ("'version'", "boolean true")),
    Case("prune_threshold true", load_edited(prune_threshold=True), ValueError, ("boolean",)),
    Case("steps_per_epoch true", load_edited(steps_per_epoch=True), ValueError, ("boolean",)),
    Case("steps_per_epoch 2.5", load_edited(steps_per_epoch=2.5), ValueError, ("integer",)),
    Case("bias false", load_edited(bias=False), ValueError, ("'bias'", "boolean false")),
    Case("scale negative", load_edited(scale=-2.0), ValueError, ("'scale' must be > 0", "-2")),
    Case("scale zero", load_edited(scale=0), ValueError, ("'scale' must be > 0",)),
    Case("skipped out of range", load_edited(skipped_steps=[3]), ValueError, ("[3]", "3 rows")),
    Case("skipped unordered", load_edited(skipped_steps=[2, 1]), ValueError, ("increasing",)),
    Case("skipped true", load_edited(skipped_steps=[True]), ValueError, ("boolean true",)),
    Case("skipped in v1", load_edited(version=1), ValueError, ("new in version 2",)),
    Case("run_id empty", load_edited(run_id=""), ValueError, ("'run_id'",)),
    Case("skipped round trip", skipped_round_trip),
    Case("version 1 file loads", version_1_loads),
    Case(
        "load a directory",
        lambda tmp: DistillationProcess.load(tmp),
        IsADirectoryError,
        ("is a directory", RUN),
    ),
    Case(
        "replay a directory",
        lambda tmp: ProcessScheduleCallback(process=str(tmp)),
        IsADirectoryError,
        ("is a directory",),
    ),
    Case("killed writes cleaned", dead_writers_temps_are_removed),
    # ---- save paths and other runs' files
    Case("save to a directory", lambda t: check_save_path(t), ValueError, ("is a directory",)),
    Case("save to 'dir/'", lambda t: check_save_path(f"{t}/new/"), ValueError, ("directory",)),
    Case("save to ''", lambda t: check_save_path(""), ValueError, ("empty", "save_path=None")),
    Case("save to read-only", read_only_folder, ValueError, ("cannot be written",)),
    Case(
        "save under a file",
        lambda t: check_save_path(t / RUN / "p.json"),
        ValueError,
        ("is a file",),
    ),
    Case(
        "save to the plot's name",
        lambda t: check_save_path(t / "p.png"),
        ValueError,
        ("lines plot", "p.json"),
    ),
    Case("save to '~/...'", tilde_expanded),
    Case(
        "replace another run's file",
        lambda t: check_overwrite(t / RUN, "run-b"),
        FileExistsError,
        ("another search", "run-a", "overwrite=True", "resume"),
    ),
    Case(
        "replace a file without run id",
        lambda t: (good_process(None).save(t / "v.json"), check_overwrite(t / "v.json", "run-b")),
        FileExistsError,
        ("without a run id",),
    ),
    Case(
        "replace a non-process file",
        lambda t: ((t / "notes.json").write_text("{}"), check_overwrite(t / "notes.json", "x")),
        FileExistsError,
        ("not a readable process file", "notes.json"),
    ),
    Case("replace own run's file", lambda t: check_overwrite(t / RUN, "run-a")),
    Case("overwrite=True", lambda t: check_overwrite(t / RUN, "run-b", overwrite=True)),
    # ---- replay
    Case("scale differs: warning", scale_warning),
    Case(
        "check(module) without a Trainer",
        check_without_trainer,
        ValueError,
        ("does not match the module's pathways", "layer3->layer3:conv_bn"),
    ),
    # ---- teachers and checkpoints
    Case(
        "teacher path typo",
        lambda t: resolve_teacher(str(t / "teachr.ckpt")),
        FileNotFoundError,
        ("does not exist", "teachr.ckpt"),
        ("Unknown model",),
    ),
    Case("teacher directory", lambda t: resolve_teacher(str(t)), IsADirectoryError, ("directory",)),
    Case("garbage checkpoint", corrupt(b"not a checkpoint"), ValueError, ("is not a checkpoint",)),
    Case("empty checkpoint", corrupt(b""), ValueError, ("is not a checkpoint", "empty")),
    Case("truncated checkpoint", truncated_checkpoint, ValueError, ("damaged",)),
    Case("JSON as checkpoint", corrupt(b'{"a": 1}', "t.pt"), ValueError, ("not a checkpoint",)),
    Case("pickled object", pickled_object, ValueError, ("argparse.Namespace", "never unpickles")),
    # ---- models, taps and input shapes
    Case(
        "fc -> fc taps",
        module(
            student=mlp(), teacher=mlp(), student_taps=["1"], teacher_taps=["1"], input_shape=[784]
        ),
        ValueError,
        ("'1->1:conv_bn'", "1-D features", "feature maps (C, H, W)", "response_kd=True"),
        ("matching kinds",),
    ),
    Case(
        "MLP student, default input shape",
        module(student=mlp(), student_taps=["1"], input_shape=None),
        ValueError,
        ("student (Sequential)", "(2, 1, 32, 32)", "no Conv2d", "pass input_shape"),
    ),
    Case(
        "MLP student, automatic taps",
        module(student=mlp(), input_shape=None),
        ValueError,
        ("(Sequential)", "no Conv2d", "pass input_shape"),
    ),
    Case(
        "mixin MLP without input_shape",
        mixin_without_input_shape,
        ValueError,
        ("pass input_shape",),
    ),
    Case(
        "teacher of other channels",
        module(teacher=create("resnet14", 10, in_channels=3), teacher_taps=["layer1"]),
        ValueError,
        ("teacher (", "(2, 1, 8, 8)", "3 channels", "in_channels"),
    ),
    Case(
        "data of other channels in training",
        forward_of_other_channels,
        ValueError,
        ("student (", "(2, 1, 8, 8)", "3 channels"),
    ),
    Case(
        "tap errors are not input errors",
        lambda t: probe_shapes(Twice(), ["block"], torch.zeros(2, 1, 4, 4), "student"),
        TapError,
        ("fired twice",),
        ("input_shape",),
    ),
    # ---- the distpro command
    Case("CLI: a key turns a section on", cli_sections),
    Case("CLI: search and replay both on", cli_both_sections),
    Case(
        "CLI: implicit replay, file missing",
        cli_fit(
            "--config",
            str(FASHION / "teacher.yaml"),
            "--config",
            '{"replay": {"process": "nope.json"}}',
            teacher=None,
        ),
        FileNotFoundError,
        ("No process file", "nope.json"),
    ),
    Case(
        "CLI: replay file missing",
        cli_fit("--config", str(FASHION / "retrain.yaml"), "--replay.process", "nope.json"),
        FileNotFoundError,
        ("No process file", "nope.json"),
    ),
]


import search_cases as sc  # noqa: E402

TEACHER_TYPO = ("does not exist", "teachr.ckpt")
CASES += [
    # ---- the search: output files
    Case(
        "search: save_path a directory, at fit start",
        sc.save_path_checked_at_fit_start("TMP"),
        ValueError,
        ("is a directory",),
    ),
    Case(
        "search: save_path '', at fit start",
        sc.save_path_checked_at_fit_start(""),
        ValueError,
        ("empty",),
    ),
    Case(
        "search: save_path the plot's name, at fit start",
        sc.save_path_checked_at_fit_start("TMP/p.png", plot=True),
        ValueError,
        ("lines plot",),
    ),
    Case(
        "search: another run's file, at fit start",
        sc.save_path_checked_at_fit_start(f"TMP/{RUN}"),
        FileExistsError,
        ("another search", "run-a", "overwrite=True"),
    ),
    Case("search: default path in the run's log folder", sc.default_path_in_log_folder),
    Case("search: plots named by plot_paths", sc.plots_beside_process),
    Case("search: Ctrl-C saves", sc.ctrl_c_saves),
    Case("search: an exception saves", sc.error_saves),
    Case("search: kill -9 loses at most an epoch", sc.kill_loses_at_most_an_epoch),
    # ---- the search: non-finite steps
    Case("search: NaN batch skipped, student intact", sc.nan_batch_skipped),
    Case(
        "search: NaN run stops",
        sc.nan_run_stops,
        RuntimeError,
        ("3 consecutive steps", "non-finite", "saved at", "max_non_finite_steps"),
    ),
    # ---- the search: fits and resumes
    Case("search: reused callback, new process", sc.reused_callback_new_process),
    Case(
        "search: reused callback, fixed save_path",
        sc.reused_callback_fixed_path,
        FileExistsError,
        ("another search",),
    ),
    Case("search: resume keeps run id and skipped steps", sc.resume_keeps_skipped_steps),
    Case("search: resume, other alpha_lr", sc.resume_other_alpha_lr),
    Case("search: resume, other alpha_optimizer", sc.resume_other_optimizer),
    # ---- the search: held-out loaders
    Case("held-out: sampler kept", sc.held_out_sampler_kept),
    Case("held-out: batch_sampler kept", sc.held_out_batch_sampler_kept),
    Case("held-out: pin_memory, worker_init_fn kept", sc.held_out_settings_kept),
    Case(
        "held-out: IterableDataset",
        lambda t: sc.HeldOutStream(torch.utils.data.DataLoader(sc.Stream(), batch_size=2)),
        TypeError,
        ("IterableDataset", "map-style", "TensorDataset"),
    ),
    Case(
        "held-out: dataset without len",
        lambda t: sc.HeldOutStream(torch.utils.data.DataLoader(sc.NoLen(), batch_size=2)),
        TypeError,
        ("has no len()",),
    ),
    Case(
        "held-out: batch_size=None",
        lambda t: sc.HeldOutStream(torch.utils.data.DataLoader(sc.Indexed(), batch_size=None)),
        ValueError,
        ("batch_size=None",),
    ),
    # ---- modules and optimizers
    Case(
        "search: heads not in the optimizer",
        sc.heads_missing_search,
        RuntimeError,
        ("ProcessSearchCallback", "heads.", "never train", "distill_heads.parameters()"),
    ),
    Case(
        "replay: heads not in the optimizer",
        sc.heads_missing_replay,
        RuntimeError,
        ("ProcessScheduleCallback", "heads.", "never train"),
    ),
    Case(
        "same module as student and teacher",
        sc.same_student_and_teacher,
        ValueError,
        ("the same nn.Module", "freeze the student"),
    ),
    Case(
        "teacher sharing the student's layers",
        sc.shared_layers,
        ValueError,
        ("shares parameters", "conv1"),
    ),
    Case(
        "dict batch",
        sc.dict_batch,
        TypeError,
        ("['image', 'label']", "split_batch(self, batch)", "Override"),
    ),
    Case("tensor batch", sc.tensor_batch, TypeError, ("Tensor", "split_batch")),
    Case(
        "teacher of other channels in training",
        sc.training_channels("teacher"),
        ValueError,
        ("teacher (CifarResNet)", "(4, 3, 8, 8)", "1 channels", "in_channels"),
    ),
    Case(
        "student of other channels in training",
        sc.training_channels("student"),
        ValueError,
        ("student (CifarResNet)", "(4, 3, 8, 8)", "1 channels", "in_channels"),
    ),
    Case(
        "DistProModule: teacher path typo",
        lambda t: sc.make_module(teacher=str(t / "teachr.ckpt")),
        FileNotFoundError,
        TEACHER_TYPO,
        ("Unknown model",),
    ),
    Case(
        "ReviewKDModule: teacher path typo",
        lambda t: ReviewKDModule(student="resnet8", teacher=str(t / "teachr.ckpt")),
        FileNotFoundError,
        TEACHER_TYPO,
        ("Unknown model",),
    ),
    # ---- extreme settings
    Case("alpha_lr extreme: warning", sc.warns("alpha_lr=5 is extreme", alpha_lr=5.0)),
    Case("epsilon tiny: warning", sc.warns("rounding noise", epsilon=1e-9)),
    Case("all weights 0: warning", sc.collapse_warned),
    Case("defaults: no such warning", sc.no_warning_at_defaults),
]


def cli_case(argv: list[str], says: tuple[str, ...]) -> Case:
    def act(tmp: Path) -> None:
        edited(tmp, version=True)
        (tmp / "trunc.json").write_text((tmp / RUN).read_text()[:50])
        code, err = distpro(*[a.replace("TMP", str(tmp)) for a in argv])
        assert code == 1, err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        for text in says:
            assert text.replace("TMP", str(tmp)) in err, err

    return Case(f"distpro {' '.join(argv)}", act)


CASES += [
    cli_case(["process", "summary", "TMP/bad.json"], ("TMP/bad.json", "'version'")),
    cli_case(["process", "summary", "TMP/trunc.json"], ("trunc.json", "not valid JSON")),
    cli_case(["process", "plot", "TMP/missing.json"], ("missing.json",)),
    cli_case(["process", "summary", "TMP"], ("is a directory",)),
    cli_case(
        ["process", "export", "TMP/run.json", "--steps", "4", "-o", "TMP/run.json"],
        ("exists", "--overwrite"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    good_process().save(tmp_path / RUN)
    before = (tmp_path / RUN).read_bytes()
    if case.error is None:
        case.act(tmp_path)
    else:
        with pytest.raises(case.error) as info:
            case.act(tmp_path)
        text = str(info.value)
        for fragment in case.says:
            assert fragment in text, f"{fragment!r} not in {text!r}"
        for fragment in case.never_says:
            assert fragment not in text, text
        if case.error is not SystemExit and info.value.__cause__ is not None:
            for fragment in case.never_says:
                assert fragment not in str(info.value.__cause__)
    # Nothing lost: the run's file is untouched and loads.
    assert (tmp_path / RUN).read_bytes() == before
    assert DistillationProcess.load(tmp_path / RUN).run_id == "run-a"
