"""``DistillationProcess``: a recorded sequence of pathway logits — record, save, load,
interpolate, remap, plot.

File format (JSON, UTF-8, no pickle, nothing executed on load)::

    {
      "format": "distpro-process",
      "version": 1,
      "pathway_names": ["layer1->layer1:conv_bn", ...],          # P unique names
      "logits": [[1.0, ...], ...],                               # T_search rows of P floats
      "normalization": {"name": "biased_softmax", "bias": 1.0, "scale": 27.0},
      "teacher_taps": [...], "student_taps": [...], "transform_kinds": [...],
      "prune_threshold": null,
      "steps_per_epoch": 375,
      "provenance": {"library_version": "0.1.0", "created": "...", ...}
    }
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .normalization import check_normalization, normalize

FORMAT_NAME = "distpro-process"
FORMAT_VERSION = 1


class ProcessFileError(ValueError):
    """A process file is malformed, inconsistent or does not fit the module."""


def _file_mode(path: Path) -> int:
    """The permissions a plain ``open(path, "w")`` would leave: the existing file's, else
    ``0o666`` less the process umask (read from ``/proc``, so the umask is never changed;
    ``0o022`` assumed where it cannot be read)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        pass
    umask = 0o022
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o666 & ~umask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename.

    The file keeps the permissions an ordinary write would give it (``mkstemp``'s private
    ``0o600`` is not carried over to the result)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _reject_constant(name: str) -> float:
    raise ProcessFileError(f"non-finite number {name} in process file")


def _is_finite(value: float) -> bool:
    """``math.isfinite`` that also answers (False) for integers too large for a float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ProcessFileError(msg)


def _str_list(data: Mapping[str, Any], key: str, required: bool = False) -> list[str] | None:
    value = data.get(key)
    if value is None:
        _check(not required, f"field {key!r} is missing")
        return None
    _check(
        isinstance(value, list) and all(isinstance(v, str) for v in value),
        f"field {key!r} must be a list of strings",
    )
    return list(value)


class DistillationProcess:
    """A distillation process ``A = {a~_t}``: one row of raw pathway logits per step.

    Example::

        p = DistillationProcess.load("process.json")
        p.logits              # [T_search, P]
        p.weights()           # normalised, [T_search, P]
        p.at(100, 5000)       # logits for step 100 of a 5000-step run
        p.plot("process.png")

    Args:
        pathway_names: the P pathway names.
        normalization: ``{"name": ..., "bias": g, "scale": s}``; weights are
            ``normalize(logits, name, bias) * scale``.
        logits: initial rows ``[T, P]`` (may be empty).
        teacher_taps: the teacher taps of the search space (for the record).
        student_taps: the student taps (for the record).
        transform_kinds: the transform kinds (for the record).
        prune_threshold: tau used in the search (for the record).
        steps_per_epoch: optimizer steps per epoch of the search.
        provenance: free-form JSON-serialisable information (versions, models, data, seed).
    """

    def __init__(
        self,
        pathway_names: Sequence[str],
        normalization: Mapping[str, Any],
        logits: Tensor | Sequence[Sequence[float]] | None = None,
        teacher_taps: Sequence[str] | None = None,
        student_taps: Sequence[str] | None = None,
        transform_kinds: Sequence[str] | None = None,
        prune_threshold: float | None = None,
        steps_per_epoch: int | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        self.pathway_names = list(pathway_names)
        _check(len(self.pathway_names) > 0, "a process needs at least one pathway")
        dupes = sorted({n for n in self.pathway_names if self.pathway_names.count(n) > 1})
        _check(not dupes, f"duplicate pathway names: {dupes}")
        norm = dict(normalization)
        _check("name" in norm, "normalization needs a 'name'")
        try:
            check_normalization(norm["name"])
        except ValueError as exc:
            raise ProcessFileError(str(exc)) from None
        norm.setdefault("bias", 1.0)
        norm.setdefault("scale", 1.0)
        for key in ("bias", "scale"):
            _check(
                isinstance(norm[key], int | float) and _is_finite(norm[key]),
                f"normalization {key!r} must be a finite number",
            )
        self.normalization = norm
        self.teacher_taps = list(teacher_taps) if teacher_taps is not None else None
        self.student_taps = list(student_taps) if student_taps is not None else None
        self.transform_kinds = list(transform_kinds) if transform_kinds is not None else None
        self.prune_threshold = prune_threshold
        self.steps_per_epoch = steps_per_epoch
        self.provenance = dict(provenance or {})
        self._rows: list[Tensor] = []
        if logits is not None:
            rows = torch.as_tensor(logits, dtype=torch.float32)
            if rows.numel() == 0:
                rows = rows.reshape(0, len(self.pathway_names))
            _check(rows.dim() == 2, f"logits must be 2-D [T, P], got shape {tuple(rows.shape)}")
            for row in rows:
                self.append(row)

    # ------------------------------------------------------------------ content
    @property
    def num_pathways(self) -> int:
        return len(self.pathway_names)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def logits(self) -> Tensor:
        """``[T_search, P]`` raw logits."""
        if not self._rows:
            return torch.zeros(0, self.num_pathways)
        return torch.stack(self._rows)

    def append(self, row: Tensor) -> None:
        """Record one step's logits ``[P]`` (copied to CPU float32)."""
        row = torch.as_tensor(row).detach().to("cpu", torch.float32).reshape(-1).clone()
        _check(
            row.numel() == self.num_pathways,
            f"a row has {row.numel()} values but the process has {self.num_pathways} pathways",
        )
        _check(bool(torch.isfinite(row).all()), "a row of logits holds non-finite values")
        self._rows.append(row)

    def truncate(self, length: int) -> None:
        """Keep only the first ``length`` rows."""
        del self._rows[length:]

    def weights(self, logits: Tensor | None = None) -> Tensor:
        """Normalised weights ``[T_search, P]`` (or of the given logits)."""
        logits = self.logits if logits is None else logits
        n = self.normalization
        return normalize(logits, n["name"], float(n["bias"])) * float(n["scale"])

    def final(self) -> Tensor:
        """The last recorded row (the paper's "use alpha_T" ablation)."""
        _check(len(self) > 0, "the process has no rows")
        return self._rows[-1].clone()

    def at(self, step: int, total_steps: int) -> Tensor:
        """Logits for ``step`` of a run of ``total_steps`` steps: linear interpolation at
        ``u = step * (T_search - 1) / (total_steps - 1)``, clamped to the recorded range."""
        _check(len(self) > 0, "the process has no rows")
        t_search = len(self)
        if t_search == 1 or total_steps <= 1:
            return self._rows[0].clone() if t_search == 1 or step <= 0 else self._rows[-1].clone()
        u = min(max(step, 0) * (t_search - 1) / (total_steps - 1), t_search - 1)
        lo = int(math.floor(u))
        hi = min(lo + 1, t_search - 1)
        frac = u - lo
        return (1.0 - frac) * self._rows[lo] + frac * self._rows[hi]

    def interpolate(self, total_steps: int) -> DistillationProcess:
        """A copy stretched or shrunk to ``total_steps`` rows with :meth:`at`."""
        rows = torch.stack([self.at(t, total_steps) for t in range(total_steps)])
        return self._like(self.pathway_names, rows)

    def fingerprint(self) -> str:
        """SHA-256 of the names, normalisation and logits (identifies a process on resume)."""
        h = hashlib.sha256()
        h.update(json.dumps([self.pathway_names, self.normalization], sort_keys=True).encode())
        h.update(self.logits.numpy().tobytes())
        return h.hexdigest()[:16]

    def _like(self, names: Sequence[str], rows: Tensor) -> DistillationProcess:
        return DistillationProcess(
            names,
            self.normalization,
            rows,
            self.teacher_taps,
            self.student_taps,
            self.transform_kinds,
            self.prune_threshold,
            self.steps_per_epoch,
            self.provenance,
        )

    # ------------------------------------------------------------------ transfer
    def remap(
        self, target_names: Sequence[str], pathway_map: Mapping[str, str] | str | None = None
    ) -> DistillationProcess:
        """This process with its columns arranged for a module whose pathways are
        ``target_names`` (paper Table 3: transfer).

        ``pathway_map`` maps each target pathway name to a pathway name of this process;
        ``"position"`` maps by position (same number of pathways needed); ``None`` requires
        identical names. A mismatch raises :class:`ProcessFileError` listing the missing and
        extra pathways.
        """
        target_names = list(target_names)
        if pathway_map is None:
            if target_names == self.pathway_names:
                return self
            missing = [n for n in target_names if n not in self.pathway_names]
            extra = [n for n in self.pathway_names if n not in target_names]
            if not missing and not extra:
                index = [self.pathway_names.index(n) for n in target_names]
                return self._like(target_names, self.logits[:, index])
            raise ProcessFileError(
                "The process does not match the module's pathways. Missing from the process: "
                f"{missing}. Extra in the process: {extra}. Pass pathway_map (a dict from the "
                "module's names to the process's names) or pathway_map='position' to transfer."
            )
        if pathway_map == "position":
            _check(
                len(target_names) == self.num_pathways,
                f"pathway_map='position' needs the same number of pathways: the module has "
                f"{len(target_names)}, the process {self.num_pathways}",
            )
            return self._like(target_names, self.logits)
        if isinstance(pathway_map, str):
            raise ProcessFileError(
                f"pathway_map must be a mapping or 'position', got {pathway_map!r}"
            )
        unmapped = [n for n in target_names if n not in pathway_map]
        unknown = sorted({v for v in pathway_map.values() if v not in self.pathway_names})
        if unmapped or unknown:
            raise ProcessFileError(
                f"pathway_map does not cover the module: module pathways without a mapping: "
                f"{unmapped}; mapped-to names not in the process: {unknown}. Process pathways: "
                f"{self.pathway_names}."
            )
        index = [self.pathway_names.index(pathway_map[n]) for n in target_names]
        return self._like(target_names, self.logits[:, index])

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "pathway_names": self.pathway_names,
            "logits": self.logits.tolist(),
            "normalization": self.normalization,
            "teacher_taps": self.teacher_taps,
            "student_taps": self.student_taps,
            "transform_kinds": self.transform_kinds,
            "prune_threshold": self.prune_threshold,
            "steps_per_epoch": self.steps_per_epoch,
            "provenance": self.provenance,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the process as JSON, atomically (temporary file + rename)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def from_dict(cls, data: Any) -> DistillationProcess:
        """Validate and build from a decoded JSON object."""
        _check(isinstance(data, dict), "the file does not hold a JSON object")
        _check(
            data.get("format") == FORMAT_NAME,
            f"not a DistPro process file (format {data.get('format')!r}, expected {FORMAT_NAME!r})",
        )
        version = data.get("version")
        _check(
            version == FORMAT_VERSION,
            f"unsupported process file version {version!r}; this library reads version "
            f"{FORMAT_VERSION}",
        )
        names = _str_list(data, "pathway_names", required=True)
        logits = data.get("logits")
        _check(isinstance(logits, list), "field 'logits' must be a list of rows")
        _check(len(logits) > 0, "field 'logits' has no rows")
        for t, row in enumerate(logits):
            _check(
                isinstance(row, list) and len(row) == len(names),
                f"logits row {t} has {len(row) if isinstance(row, list) else 'no'} values but "
                f"there are {len(names)} pathway names",
            )
            _check(
                all(isinstance(v, int | float) and not isinstance(v, bool) for v in row),
                f"logits row {t} holds non-numbers",
            )
            _check(all(_is_finite(v) for v in row), f"logits row {t} holds non-finite values")
        norm = data.get("normalization")
        _check(isinstance(norm, dict), "field 'normalization' must be an object")
        tau = data.get("prune_threshold")
        _check(tau is None or isinstance(tau, int | float), "'prune_threshold' must be a number")
        spe = data.get("steps_per_epoch")
        _check(spe is None or (isinstance(spe, int) and spe > 0), "'steps_per_epoch' must be > 0")
        prov = data.get("provenance", {})
        _check(isinstance(prov, dict), "'provenance' must be an object")
        return cls(
            names,
            norm,
            torch.tensor(logits, dtype=torch.float32),
            _str_list(data, "teacher_taps"),
            _str_list(data, "student_taps"),
            _str_list(data, "transform_kinds"),
            tau,
            spe,
            prov,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DistillationProcess:
        """Read and validate a process file; a bad file raises :class:`ProcessFileError`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No process file at {str(path)!r}.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
        except ProcessFileError as exc:
            raise ProcessFileError(f"{path}: {exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProcessFileError(
                f"{path}: not valid JSON (truncated or corrupted?): {exc}"
            ) from None
        try:
            return cls.from_dict(data)
        except ProcessFileError as exc:
            raise ProcessFileError(f"{path}: {exc}") from None

    # ------------------------------------------------------------------ plots
    def teacher_groups(self) -> dict[str, list[int]]:
        """Pathway indices grouped by teacher tap (the text before ``->``)."""
        groups: dict[str, list[int]] = {}
        for idx, name in enumerate(self.pathway_names):
            groups.setdefault(name.split("->", 1)[0], []).append(idx)
        return groups

    def figure(self, kind: str = "lines") -> Any:
        """A matplotlib figure: ``"lines"`` (paper Fig. 6: one panel per teacher tap, one
        line per pathway, x = step) or ``"heatmap"`` (pathways x steps)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        weights = self.weights().numpy()
        if kind == "lines":
            groups = self.teacher_groups()
            fig = Figure(figsize=(4.5 * len(groups), 3.6), constrained_layout=True)
            axes = fig.subplots(1, len(groups), squeeze=False)[0]
            for ax, (tap, idx) in zip(axes, groups.items()):
                for i in idx:
                    ax.plot(weights[:, i], label=self.pathway_names[i].split("->", 1)[1], lw=1.2)
                ax.set_title(f"teacher {tap}")
                ax.set_xlabel("step")
                ax.set_ylabel("pathway weight")
                ax.legend(fontsize=6, ncol=1 + len(idx) // 10)
            return fig
        if kind == "heatmap":
            fig = Figure(figsize=(8, 0.25 * self.num_pathways + 1.5), constrained_layout=True)
            ax = fig.subplots()
            im = ax.imshow(weights.T, aspect="auto", interpolation="nearest", cmap="viridis")
            ax.set_yticks(range(self.num_pathways), self.pathway_names, fontsize=6)
            ax.set_xlabel("step")
            fig.colorbar(im, ax=ax, label="weight")
            return fig
        raise ValueError(f"Unknown plot kind {kind!r}: use 'lines' or 'heatmap'.")

    def plot(self, path: str | os.PathLike[str], kind: str = "lines") -> Path:
        """Save :meth:`figure` as an image (format from the suffix, e.g. ``.png``)."""
        _check(len(self) > 0, "the process has no rows to plot")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure(kind).savefig(path, dpi=110)
        return path

    def summary(self) -> str:
        """A human-readable summary: size, normalisation, first/last weights per pathway."""
        w = self.weights()
        lines = [
            f"DistPro process: {len(self)} steps x {self.num_pathways} pathways, normalization "
            f"{self.normalization}, steps/epoch {self.steps_per_epoch}, fingerprint "
            f"{self.fingerprint()}",
            f"{'pathway':<40} {'w first':>9} {'w last':>9} {'w min':>9} {'w max':>9}",
        ]
        for i, name in enumerate(self.pathway_names):
            col = w[:, i]
            lines.append(
                f"{name:<40} {col[0]:9.4f} {col[-1]:9.4f} {col.min():9.4f} {col.max():9.4f}"
            )
        for key, value in self.provenance.items():
            lines.append(f"{key}: {value}")
        return "\n".join(lines)


def log_process_figures(trainer: Any, process: DistillationProcess, tag: str) -> None:
    """Log the process plots as images to loggers that accept them (W&B, TensorBoard)."""
    if len(process) == 0:
        return
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for logger in trainer.loggers:
        for kind in ("lines", "heatmap"):
            if isinstance(logger, WandbLogger):
                import wandb

                fig = process.figure(kind)
                with tempfile.TemporaryDirectory() as tmp:
                    png = Path(tmp) / f"{kind}.png"
                    fig.savefig(png, dpi=110)
                    logger.experiment.log(
                        {
                            f"{tag}/{kind}": wandb.Image(str(png)),
                            "trainer/global_step": trainer.global_step,
                        }
                    )
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(
                    f"{tag}/{kind}", process.figure(kind), trainer.global_step
                )
