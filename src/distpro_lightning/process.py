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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .files import atomic_write_text
from .normalization import check_normalization, normalize

FORMAT_NAME = "distpro-process"
FORMAT_VERSION = 1


class ProcessFileError(ValueError):
    """A process file is malformed, inconsistent or does not fit the module."""


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
        return self.like(self.pathway_names, rows)

    def fingerprint(self) -> str:
        """SHA-256 of the names, normalisation and logits (identifies a process on resume)."""
        h = hashlib.sha256()
        h.update(json.dumps([self.pathway_names, self.normalization], sort_keys=True).encode())
        h.update(self.logits.numpy().tobytes())
        return h.hexdigest()[:16]

    def like(self, names: Sequence[str], rows: Tensor) -> DistillationProcess:
        """A process with this one's normalisation and record, and ``names`` and ``rows``."""
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
        from .transfer import remap_process

        return remap_process(self, target_names, pathway_map)

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
    def figure(self, kind: str = "lines") -> Any:
        """A matplotlib figure: ``"lines"`` (paper Fig. 6: one panel per teacher tap, one
        line per pathway, x = step) or ``"heatmap"`` (pathways x steps)."""
        from .process_report import process_figure

        return process_figure(self, kind)

    def plot(self, path: str | os.PathLike[str], kind: str = "lines") -> Path:
        """Save :meth:`figure` as an image (format from the suffix, e.g. ``.png``)."""
        _check(len(self) > 0, "the process has no rows to plot")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure(kind).savefig(path, dpi=110)
        return path

    def summary(self) -> str:
        """A human-readable summary: size, normalisation, first/last weights per pathway."""
        from .process_report import process_summary

        return process_summary(self)
