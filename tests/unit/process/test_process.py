"""DistillationProcess: JSON files (round trip, atomic writes, validation), interpolation,
remapping for transfer, fingerprint, plots, summary and the ``distpro process`` command."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pytest
import torch

from distpro_lightning.cli.main import process_main
from distpro_lightning.process.core import (
    FORMAT_NAME,
    FORMAT_VERSION,
    DistillationProcess,
    ProcessFileError,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ["layer1->layer1:conv_bn", "layer1->layer2:attn2", "layer2->layer2:conv_bn"]
NORM = {"name": "biased_softmax", "bias": 1.0, "scale": 3.0}

# Five hand-written rows (T_search = 5, P = 3): every column varies differently, so any
# wrong row index or interpolation weight shows up.
ROWS = [
    [0.0, 10.0, 0.0],
    [1.0, 9.0, -1.0],
    [2.0, 6.0, 2.0],
    [3.0, 1.0, -3.0],
    [4.0, -6.0, 4.0],
]


def five_rows() -> DistillationProcess:
    return DistillationProcess(NAMES, NORM, logits=ROWS)


def full_process() -> DistillationProcess:
    g = torch.Generator().manual_seed(0)
    return DistillationProcess(
        NAMES,
        {"name": "biased_softmax", "bias": 0.5, "scale": 3.0},
        logits=torch.randn(6, 3, generator=g) * 3.0,
        teacher_taps=["layer1", "layer2"],
        student_taps=["layer1", "layer2"],
        transform_kinds=["conv_bn", "attn2"],
        prune_threshold=-0.25,
        steps_per_epoch=37,
        provenance={"library_version": "0.1.0", "seed": 3, "models": {"student": "resnet8"}},
    )


def _assert_rows(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- files
def test_save_load_round_trip(tmp_path: Path) -> None:
    p = full_process()
    f = tmp_path / "process.json"
    p.save(f)
    q = DistillationProcess.load(f)
    assert torch.equal(q.logits, p.logits)  # bitwise
    assert q.logits.dtype == torch.float32
    assert q.pathway_names == NAMES
    assert q.normalization == {"name": "biased_softmax", "bias": 0.5, "scale": 3.0}
    assert q.provenance == {"library_version": "0.1.0", "seed": 3, "models": {"student": "resnet8"}}
    assert q.teacher_taps == ["layer1", "layer2"]
    assert q.student_taps == ["layer1", "layer2"]
    assert q.transform_kinds == ["conv_bn", "attn2"]
    assert q.prune_threshold == -0.25
    assert q.steps_per_epoch == 37
    assert len(q) == 6
    assert q.fingerprint() == p.fingerprint()


def test_file_is_plain_json_and_written_atomically(tmp_path: Path) -> None:
    f = tmp_path / "process.json"
    full_process().save(f)
    raw = f.read_bytes()
    assert not raw.startswith(b"\x80")  # no pickle protocol header
    data = json.loads(raw.decode("utf-8"))
    assert data["format"] == FORMAT_NAME and data["version"] == FORMAT_VERSION
    assert data["pathway_names"] == NAMES
    assert len(data["logits"]) == 6 and all(len(r) == 3 for r in data["logits"])
    assert os.listdir(tmp_path) == ["process.json"]  # no temporary file left behind
    # Overwriting also leaves only the target.
    five_rows().save(f)
    assert os.listdir(tmp_path) == ["process.json"]
    assert torch.equal(DistillationProcess.load(f).logits, torch.tensor(ROWS))


def test_written_file_has_ordinary_permissions(tmp_path: Path) -> None:
    # An atomic write must not leave mkstemp's private 0o600 behind: a new file gets what
    # open() would give it (0o666 less the umask), an existing file keeps its mode.
    old = os.umask(0o027)
    try:
        f = tmp_path / "process.json"
        full_process().save(f)
        assert f.stat().st_mode & 0o777 == 0o640
        f.chmod(0o604)
        five_rows().save(f)
        assert f.stat().st_mode & 0o777 == 0o604
    finally:
        os.umask(old)


@pytest.mark.parametrize("target", ["json.dumps", "os.replace", "os.fsync"])
def test_failed_write_leaves_existing_file_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    f = tmp_path / "process.json"
    five_rows().save(f)
    before = f.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure")

    module_name, attr = target.split(".")
    monkeypatch.setattr({"json": json, "os": os}[module_name], attr, boom)
    with pytest.raises(RuntimeError, match="simulated failure"):
        full_process().save(f)
    monkeypatch.undo()
    assert f.read_bytes() == before
    assert os.listdir(tmp_path) == ["process.json"]
    assert torch.equal(DistillationProcess.load(f).logits, torch.tensor(ROWS))


@pytest.mark.parametrize("target", ["os.replace", "tempfile.mkstemp"])
def test_a_failed_write_names_the_file_not_its_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    f = tmp_path / "process.json"
    five_rows().save(f)
    before = f.read_bytes()

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".process.json.1-x.tmp"))

    module_name, attr = target.split(".")
    monkeypatch.setattr({"os": os, "tempfile": tempfile}[module_name], attr, denied)
    with pytest.raises(PermissionError) as info:
        full_process().save(f)
    monkeypatch.undo()
    message = str(info.value)
    assert repr(str(f)) in message and ".tmp" not in message
    assert "Permission denied" in message and "choose a writable location" in message
    assert f.read_bytes() == before and os.listdir(tmp_path) == ["process.json"]


def test_a_write_never_replaces_a_device_or_pipe(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match=r"pipe.* exists and is not a regular file"):
        full_process().save(fifo)
    assert fifo.is_fifo() and os.listdir(tmp_path) == ["pipe"]


def _valid_dict() -> dict:
    return five_rows().to_dict()


def _write(tmp_path: Path, data: dict | str | bytes) -> Path:
    f = tmp_path / "bad.json"
    if isinstance(data, bytes):
        f.write_bytes(data)
    elif isinstance(data, str):
        f.write_text(data, encoding="utf-8")
    else:
        f.write_text(json.dumps(data), encoding="utf-8")
    return f


def _rejects(f: Path, *fragments: str) -> str:
    with pytest.raises(ProcessFileError) as info:
        DistillationProcess.load(f)
    msg = str(info.value)
    assert str(f) in msg, msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


def test_rejects_truncated_file(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    five_rows().save(good)
    text = good.read_text()
    _rejects(_write(tmp_path, text[: len(text) // 2]), "not valid JSON")


def test_rejects_non_json_bytes(tmp_path: Path) -> None:
    # A pickle-looking binary blob (invalid UTF-8) and a plain non-JSON text.
    _rejects(_write(tmp_path, b"\x80\x04\x95\x10\x00\x00\xff\xfe binary"), "not valid JSON")
    _rejects(_write(tmp_path, "hello: world\n"), "not valid JSON")
    _rejects(_write(tmp_path, "[1, 2, 3]"), "JSON object")


def test_rejects_wrong_format_and_version(tmp_path: Path) -> None:
    d = _valid_dict()
    d["format"] = "something-else"
    _rejects(_write(tmp_path, d), "not a DistPro process file", "something-else")
    d = _valid_dict()
    d["version"] = FORMAT_VERSION + 1
    _rejects(_write(tmp_path, d), f"unsupported process file version {FORMAT_VERSION + 1}")


def test_rejects_row_of_wrong_length(tmp_path: Path) -> None:
    d = _valid_dict()
    d["logits"][2] = [1.0, 2.0]
    _rejects(_write(tmp_path, d), "logits row 2 has 2 values", "3 pathway names")
    d = _valid_dict()
    d["logits"][1] = 5.0  # a row that is not a list
    _rejects(_write(tmp_path, d), "logits row 1")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999", "1e39"])
def test_rejects_non_finite_logits(tmp_path: Path, token: str) -> None:
    p = DistillationProcess(NAMES, NORM, logits=[[0.5, 1234.5, 0.25], [1.0, 2.0, 3.0]])
    good = tmp_path / "good.json"
    p.save(good)
    text = good.read_text()
    assert text.count("1234.5") == 1
    f = _write(tmp_path, text.replace("1234.5", token))
    msg = _rejects(f)
    assert "non-finite" in msg


@pytest.mark.parametrize("value", ["abc", True, None, [1.0], {"a": 1}])
def test_rejects_non_numbers(tmp_path: Path, value) -> None:
    d = _valid_dict()
    d["logits"][3][1] = value
    _rejects(_write(tmp_path, d), "logits row 3 holds non-numbers")


def test_rejects_huge_integer_with_a_clear_error(tmp_path: Path) -> None:
    # An integer literal too large for a float is a corrupted file, not a crash.
    d = _valid_dict()
    text = json.dumps(d).replace("10.0", "1" + "0" * 400, 1)
    _rejects(_write(tmp_path, text), "non-finite")


def test_rejects_duplicate_names_unknown_normalization_empty_logits(tmp_path: Path) -> None:
    d = _valid_dict()
    d["pathway_names"] = [NAMES[0], NAMES[1], NAMES[0]]
    _rejects(_write(tmp_path, d), "duplicate pathway names", NAMES[0])
    d = _valid_dict()
    d["normalization"] = {"name": "softermax", "bias": 1.0, "scale": 1.0}
    _rejects(_write(tmp_path, d), "Unknown normalization 'softermax'", "biased_softmax")
    d = _valid_dict()
    d["normalization"] = {"bias": 1.0}
    _rejects(_write(tmp_path, d), "normalization needs a 'name'")
    d = _valid_dict()
    d["normalization"]["scale"] = "big"
    _rejects(_write(tmp_path, d), "'scale' must be a finite number")
    d = _valid_dict()
    d["logits"] = []
    _rejects(_write(tmp_path, d), "'logits' has no rows")
    d = _valid_dict()
    d["pathway_names"] = [NAMES[0], 3, NAMES[2]]
    _rejects(_write(tmp_path, d), "'pathway_names' must be a list of strings")


@pytest.mark.parametrize(
    "field, fragment",
    [
        ("format", "not a DistPro process file"),
        ("version", "unsupported process file version None"),
        ("pathway_names", "'pathway_names' is missing"),
        ("logits", "'logits'"),
        ("normalization", "'normalization'"),
    ],
)
def test_rejects_missing_fields(tmp_path: Path, field: str, fragment: str) -> None:
    d = _valid_dict()
    del d[field]
    _rejects(_write(tmp_path, d), fragment)


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No process file"):
        DistillationProcess.load(tmp_path / "nope.json")


def test_constructor_validation() -> None:
    with pytest.raises(ProcessFileError, match="at least one pathway"):
        DistillationProcess([], NORM)
    with pytest.raises(ProcessFileError, match="has 2 values but the process has 3"):
        DistillationProcess(NAMES, NORM, logits=[[1.0, 2.0]])
    p = DistillationProcess(NAMES, NORM)
    with pytest.raises(ProcessFileError, match="non-finite"):
        p.append(torch.tensor([0.0, float("nan"), 1.0]))
    assert len(p) == 0 and p.logits.shape == (0, 3)
    with pytest.raises(ProcessFileError, match="no rows"):
        p.at(0, 10)
    with pytest.raises(ProcessFileError, match="no rows"):
        p.final()


# --------------------------------------------------------------------------- weights
def test_weights_equal_biased_softmax_times_scale() -> None:
    p = DistillationProcess(NAMES, {"name": "biased_softmax", "bias": 0.7, "scale": 4.5}, ROWS)
    w = p.weights()
    assert w.shape == (5, 3)
    for t, row in enumerate(ROWS):
        denom = sum(math.exp(v) for v in row) + math.exp(0.7)
        expected = [4.5 * math.exp(v) / denom for v in row]
        _assert_rows(w[t], expected)
    # Other normalisations follow their formula too.
    q = DistillationProcess(NAMES, {"name": "sigmoid", "scale": 2.0}, ROWS)
    _assert_rows(q.weights()[1], [2.0 / (1.0 + math.exp(-v)) for v in ROWS[1]])
    u = DistillationProcess(NAMES, {"name": "uniform", "scale": 3.0}, ROWS)
    assert torch.allclose(u.weights(), torch.ones(5, 3))
    assert torch.equal(p.final(), torch.tensor(ROWS[-1]))


# --------------------------------------------------------------------------- interpolation
def test_at_longer_run_hits_rows_and_midpoints() -> None:
    p = five_rows()
    # total_steps = 9: u = step * 4 / 8 = step / 2: rows at even steps, midpoints at odd ones.
    expected = {
        0: [0.0, 10.0, 0.0],
        1: [0.5, 9.5, -0.5],
        2: [1.0, 9.0, -1.0],
        3: [1.5, 7.5, 0.5],
        4: [2.0, 6.0, 2.0],
        5: [2.5, 3.5, -0.5],
        6: [3.0, 1.0, -3.0],
        7: [3.5, -2.5, 0.5],
        8: [4.0, -6.0, 4.0],
    }
    for step, row in expected.items():
        _assert_rows(p.at(step, 9), row)
    for step in (0, 2, 4, 6, 8):  # exact hits are bitwise rows
        assert torch.equal(p.at(step, 9), torch.tensor(ROWS[step // 2]))


def test_at_fractional_positions() -> None:
    p = five_rows()
    # total_steps = 4: u = step * 4 / 3.
    _assert_rows(p.at(0, 4), ROWS[0])
    _assert_rows(p.at(1, 4), [1.0 + 1 / 3, 9.0 - 3.0 / 3, -1.0 + 3.0 / 3])
    _assert_rows(p.at(2, 4), [2.0 + 2 / 3, 6.0 - 10.0 / 3, 2.0 - 10.0 / 3])
    _assert_rows(p.at(3, 4), ROWS[4])


def test_at_shorter_run_and_single_step_and_clamping() -> None:
    p = five_rows()
    # total_steps = 3: u = step * 4 / 2 = 2 * step -> rows 0, 2, 4.
    _assert_rows(p.at(0, 3), ROWS[0])
    _assert_rows(p.at(1, 3), ROWS[2])
    _assert_rows(p.at(2, 3), ROWS[4])
    # total_steps = 1: the single step gets the first row.
    _assert_rows(p.at(0, 1), ROWS[0])
    # Beyond the end: the last row; before the start: the first.
    for step, total in [(9, 9), (10, 9), (1000, 9), (3, 3), (7, 3), (5, 1)]:
        _assert_rows(p.at(step, total), ROWS[4])
    _assert_rows(p.at(-4, 9), ROWS[0])
    # A single searched row is used everywhere.
    one = DistillationProcess(NAMES, NORM, logits=[ROWS[3]])
    for step, total in [(0, 1), (0, 9), (4, 9), (20, 9)]:
        _assert_rows(one.at(step, total), ROWS[3])


def test_at_returns_a_copy() -> None:
    p = five_rows()
    row = p.at(2, 9)
    row += 100.0
    _assert_rows(p.at(2, 9), ROWS[1])
    f = p.final()
    f += 100.0
    _assert_rows(p.final(), ROWS[4])


@pytest.mark.parametrize("n", [1, 3, 7, 9, 20])
def test_interpolate_has_n_rows_matching_at(n: int) -> None:
    p = full_process()
    q = p.interpolate(n)
    assert len(q) == n and q.logits.shape == (n, 3)
    for t in range(n):
        assert torch.equal(q.logits[t], p.at(t, n))
    assert torch.equal(q.logits[0], p.logits[0])
    if n > 1:
        assert torch.equal(q.logits[-1], p.logits[-1])
    assert q.pathway_names == p.pathway_names
    assert q.normalization == p.normalization
    assert q.steps_per_epoch == p.steps_per_epoch and q.provenance == p.provenance
    assert len(p) == 6  # the original is unchanged


# --------------------------------------------------------------------------- remap
def test_remap_identical_and_reordered_names() -> None:
    p = five_rows()
    same = p.remap(list(NAMES))
    assert same.pathway_names == NAMES and torch.equal(same.logits, p.logits)
    order = [2, 0, 1]
    q = p.remap([NAMES[i] for i in order])
    assert q.pathway_names == [NAMES[i] for i in order]
    assert torch.equal(q.logits, p.logits[:, order])
    _assert_rows(q.logits[1], [-1.0, 1.0, 9.0])


def test_remap_different_names_lists_missing_and_extra() -> None:
    p = five_rows()
    target = [NAMES[0], "layer3->layer3:conv_bn", "layer3->layer1:attn3"]
    with pytest.raises(ProcessFileError) as info:
        p.remap(target)
    msg = str(info.value)
    assert "Missing from the process: ['layer3->layer3:conv_bn', 'layer3->layer1:attn3']" in msg
    assert f"Extra in the process: ['{NAMES[1]}', '{NAMES[2]}']" in msg
    assert "pathway_map" in msg


def test_remap_with_explicit_map_and_position() -> None:
    p = five_rows()
    target = ["s1", "s2", "s3", "s4"]
    mapping = {"s1": NAMES[2], "s2": NAMES[0], "s3": NAMES[0], "s4": NAMES[1]}
    q = p.remap(target, mapping)
    assert q.pathway_names == target
    assert torch.equal(q.logits, p.logits[:, [2, 0, 0, 1]])
    assert q.normalization == p.normalization
    pos = p.remap(["x", "y", "z"], "position")
    assert pos.pathway_names == ["x", "y", "z"]
    assert torch.equal(pos.logits, p.logits)
    with pytest.raises(ProcessFileError, match="the module has 2, the process 3"):
        p.remap(["x", "y"], "position")
    with pytest.raises(ProcessFileError, match="mapping or 'position'"):
        p.remap(["x", "y", "z"], "by-name")


def test_remap_bad_map_names_unmapped_and_unknown() -> None:
    p = five_rows()
    with pytest.raises(ProcessFileError) as info:
        p.remap(["s1", "s2"], {"s1": NAMES[0], "s2": "not-a-pathway"})
    msg = str(info.value)
    assert "mapped-to names not in the process: ['not-a-pathway']" in msg
    with pytest.raises(ProcessFileError) as info:
        p.remap(["s1", "s2", "s3"], {"s1": NAMES[0]})
    msg = str(info.value)
    assert "module pathways without a mapping: ['s2', 's3']" in msg


# --------------------------------------------------------------------------- fingerprint
def test_fingerprint_changes_with_one_logit() -> None:
    p = full_process()
    fp = p.fingerprint()
    assert fp == full_process().fingerprint()
    logits = p.logits.clone()
    logits[3, 1] = torch.nextafter(logits[3, 1], torch.tensor(float("inf")))
    q = DistillationProcess(NAMES, p.normalization, logits)
    assert q.fingerprint() != fp
    # Names and normalisation count too.
    assert DistillationProcess(["a", "b", "c"], p.normalization, p.logits).fingerprint() != fp
    norm = dict(p.normalization, bias=0.6)
    assert DistillationProcess(NAMES, norm, p.logits).fingerprint() != fp
    # A shorter (truncated) process is a different one.
    short = DistillationProcess(NAMES, p.normalization, p.logits)
    short.truncate(4)
    assert len(short) == 4 and short.fingerprint() != fp


# --------------------------------------------------------------------------- plots, summary
@pytest.mark.parametrize("kind", ["lines", "heatmap"])
def test_plot_writes_png(tmp_path: Path, kind: str) -> None:
    p = full_process()
    out = p.plot(tmp_path / "sub" / f"{kind}.png", kind=kind)
    data = Path(out).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_plot_bad_kind_and_empty_process(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown plot kind 'pie'"):
        full_process().plot(tmp_path / "x.png", kind="pie")
    with pytest.raises(ProcessFileError, match="no rows"):
        DistillationProcess(NAMES, NORM).plot(tmp_path / "y.png")
    assert not (tmp_path / "y.png").exists()


def test_figure_lines_has_one_panel_per_teacher_tap() -> None:
    fig = full_process().figure("lines")
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["teacher layer1", "teacher layer2"]
    assert [len(ax.get_lines()) for ax in axes] == [2, 1]


def test_summary_mentions_every_pathway() -> None:
    p = full_process()
    s = p.summary()
    assert "6 steps x 3 pathways" in s
    assert p.fingerprint() in s
    for name in NAMES:
        assert name in s
    w = p.weights()
    line = next(ln for ln in s.splitlines() if ln.split()[1:2] == [NAMES[1]])
    first, last = (float(v) for v in line.split()[2:4])
    assert s.count("w first") == 1  # one weight table
    assert first == pytest.approx(float(w[0, 1]), abs=1e-4)
    assert last == pytest.approx(float(w[-1, 1]), abs=1e-4)
    assert "seed: 3" in s


# --------------------------------------------------------------------------- CLI
def test_cli_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.json"
    full_process().save(f)
    assert process_main(["summary", str(f)]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    assert full_process().fingerprint() in out


def test_cli_plot(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    full_process().save(f)
    out = tmp_path / "plots" / "proc.png"
    assert process_main(["plot", str(f), "-o", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "plots" / "proc_heatmap.png").read_bytes().startswith(PNG_MAGIC)
    only = tmp_path / "lines.png"
    assert process_main(["plot", str(f), "-o", str(only), "--kind", "heatmap"]) == 0
    assert only.read_bytes().startswith(PNG_MAGIC)
    assert not (tmp_path / "lines_heatmap.png").exists()
    # Default output: the file name with .png.
    assert process_main(["plot", str(f), "--kind", "lines"]) == 0
    assert (tmp_path / "p.png").read_bytes().startswith(PNG_MAGIC)


def test_cli_export(tmp_path: Path) -> None:
    p = full_process()
    f = tmp_path / "p.json"
    p.save(f)
    out2 = tmp_path / "out" / "p7.json"
    assert process_main(["export", str(f), "--steps", "7", "-o", str(out2)]) == 0
    q = DistillationProcess.load(out2)
    assert len(q) == 7
    assert torch.equal(q.logits, p.interpolate(7).logits)
    assert q.pathway_names == NAMES and q.normalization == p.normalization
    assert q.provenance == p.provenance and q.steps_per_epoch == p.steps_per_epoch
    with pytest.raises(SystemExit):
        process_main(["export", str(f), "--steps", "0", "-o", str(tmp_path / "z.json")])
    assert not (tmp_path / "z.json").exists()


def test_cli_export_csv(tmp_path: Path) -> None:
    p = full_process()
    f = tmp_path / "p.json"
    p.save(f)
    out = tmp_path / "w.csv"
    assert process_main(["export", str(f), "--steps", "7", "-o", str(out), "--csv"]) == 0
    lines = out.read_text().strip().splitlines()
    assert lines[0].split(",") == ["step", *NAMES]
    assert len(lines) == 8
    w = p.interpolate(7).weights()
    for t, line in enumerate(lines[1:]):
        cells = line.split(",")
        assert int(cells[0]) == t
        values = torch.tensor([float(c) for c in cells[1:]])
        torch.testing.assert_close(values, w[t], rtol=1e-5, atol=1e-7)
    assert set(os.listdir(tmp_path)) == {"p.json", "w.csv"}  # no temporary file left


def test_cli_rejects_bad_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text('{"format": "distpro-process", "version": 1, "pathway_na')
    with pytest.raises(ProcessFileError, match="not valid JSON"):
        process_main(["summary", str(f)])


def test_rejects_huge_integer_in_normalization(tmp_path: Path) -> None:
    d = _valid_dict()
    text = json.dumps(d).replace('"scale": 3.0', '"scale": 1' + "0" * 400, 1)
    assert "0" * 400 in text
    _rejects(_write(tmp_path, text), "'scale' must be a finite number")


@pytest.mark.parametrize(
    ("suffix", "magic"), [(".png", b"\x89PNG"), (".pdf", b"%PDF"), ("", b"\x89PNG")]
)
def test_plot_is_written_atomically_in_the_suffix_format(tmp_path: Path, suffix, magic) -> None:
    f = tmp_path / f"process{suffix}"
    assert full_process().plot(f) == f
    assert f.read_bytes().startswith(magic)
    assert os.listdir(tmp_path) == [f.name]  # no temporary file left behind


def test_process_summary_does_not_import_lightning(tmp_path: Path) -> None:
    """``distpro process summary`` loads torch and the process code only (the package's
    public names are imported on first use): no Lightning, torchmetrics or jsonargparse."""
    import subprocess
    import sys

    f = tmp_path / "p.json"
    full_process().save(f)
    code = (
        "import sys\n"
        "from distpro_lightning.cli.main import main\n"
        f"try:\n    main(['process', 'summary', {str(f)!r}])\n"
        "except SystemExit as exc:\n    assert exc.code == 0\n"
        "heavy = [m for m in ('lightning', 'torchmetrics', 'jsonargparse') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout and "w first" in out.stdout
    import distpro_lightning

    assert set(distpro_lightning.__all__) == {*distpro_lightning._PUBLIC, "__version__"}


# ---------------------------------------------------------------- average
def test_average_has_the_mean_weights_of_its_processes_at_every_row() -> None:
    a = five_rows()
    b = DistillationProcess(NAMES, NORM, logits=[[r[2], r[0], r[1]] for r in ROWS])
    mean = DistillationProcess.average([a, b])
    torch.testing.assert_close(mean.weights(), (a.weights() + b.weights()) / 2)
    assert len(mean) == 5 and mean.pathway_names == NAMES and mean.run_id is None
    fingerprints = [s["fingerprint"] for s in mean.provenance["averaged_from"]]
    assert fingerprints == [a.fingerprint(), b.fingerprint()]


def test_average_of_a_hand_computed_pair_of_rows() -> None:
    # biased softmax, bias 0: logits (0, 0) give weights (1/3, 1/3); logits (ln 2, 0) give
    # (2/4, 1/4); their mean (5/12, 7/24) is what the averaged row must normalise to
    norm = {"name": "biased_softmax", "bias": 0.0, "scale": 1.0}
    a = DistillationProcess(["x", "y"], norm, logits=[[0.0, 0.0]])
    b = DistillationProcess(["x", "y"], norm, logits=[[math.log(2), 0.0]])
    got = DistillationProcess.average([a, b]).weights()
    torch.testing.assert_close(got, torch.tensor([[5 / 12, 7 / 24]]))


def test_average_round_trips_through_its_file(tmp_path: Path) -> None:
    mean = DistillationProcess.average([five_rows(), five_rows()])
    mean.save(tmp_path / "mean.json")
    back = DistillationProcess.load(tmp_path / "mean.json")
    torch.testing.assert_close(back.weights(), five_rows().weights())
    assert back.provenance["averaged_from"] == mean.provenance["averaged_from"]


EXPORT_FIX = "distpro process export --steps N"


@pytest.mark.parametrize(
    ("other", "what", "fix"),
    [
        (DistillationProcess(list(reversed(NAMES)), NORM, logits=ROWS), "pathway order", "remap"),
        (
            DistillationProcess([*NAMES[:2], "x->y:kd"], NORM, logits=ROWS),
            "pathways \\(missing \\['layer2->layer2:conv_bn'\\], extra \\['x->y:kd'\\]\\)",
            EXPORT_FIX,
        ),
        (
            DistillationProcess(NAMES, {**NORM, "scale": 2.0}, logits=ROWS),
            "normalization",
            EXPORT_FIX,
        ),
        (DistillationProcess(NAMES, NORM, logits=ROWS[:4]), "number of rows", EXPORT_FIX),
        (
            DistillationProcess(NAMES, NORM, logits=ROWS, steps_per_epoch=7),
            "steps per epoch",
            EXPORT_FIX,
        ),
    ],
)
def test_average_refuses_processes_of_another_space_or_length(other, what, fix) -> None:
    with pytest.raises(ProcessFileError, match=f"differs from process 0 in its {what}") as info:
        DistillationProcess.average([five_rows(), other])
    assert fix in str(info.value)


def test_distpro_process_average_writes_the_mean_and_refuses_an_existing_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    five_rows().save(a)
    DistillationProcess(NAMES, NORM, logits=[[-x for x in r] for r in ROWS]).save(b)
    out = tmp_path / "mean.json"
    assert process_main(["average", str(a), str(b), "-o", str(out)]) == 0
    want = (DistillationProcess.load(a).weights() + DistillationProcess.load(b).weights()) / 2
    torch.testing.assert_close(DistillationProcess.load(out).weights(), want)
    assert "mean weights of 2 processes" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="--overwrite"):
        process_main(["average", str(a), "-o", str(out)])
    assert process_main(["average", str(a), "-o", str(out), "--overwrite"]) == 0
    assert "mean weights of 1 process)" in capsys.readouterr().out
    torch.testing.assert_close(DistillationProcess.load(out).weights(), five_rows().weights())


def test_average_of_one_process_is_that_process_so_its_pruning_is_unchanged() -> None:
    p = five_rows()
    torch.testing.assert_close(DistillationProcess.average([p]).logits, p.logits)


def test_average_keeps_the_shared_provenance_and_files_what_differs_under_each_source() -> None:
    a = DistillationProcess(NAMES, NORM, logits=ROWS, provenance={"student": "s", "seed": 1})
    a.provenance["search_val_loss"] = 0.4
    b = DistillationProcess(NAMES, NORM, logits=ROWS, provenance={"student": "s", "seed": 2})
    b.prune_threshold = 0.5
    mean = DistillationProcess.average([a, b])
    assert mean.provenance["student"] == "s" and "search_val_loss" not in mean.provenance
    first, second = mean.provenance["averaged_from"]
    assert (first["seed"], first["search_val_loss"], second["seed"]) == (1, 0.4, 2)
    assert mean.prune_threshold is None  # the sources' taus differ: none is claimed
    assert mean.provenance["created"] != a.provenance.get("created")
