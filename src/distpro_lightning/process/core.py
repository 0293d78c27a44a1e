"""``DistillationProcess``: a recorded sequence of pathway logits — record, save, load,
interpolate, remap, plot.

File format (JSON, UTF-8, no pickle, nothing executed on load):

```text
{
  "format": "distpro-process",
  "version": 2,
  "pathway_names": ["layer1->layer1:conv_bn", ...],          # P unique names
  "logits": [[1.0, ...], ...],                               # T_search rows of P floats
  "normalization": {"name": "biased_softmax", "bias": 1.0, "scale": 27.0},
  "teacher_taps": [...], "student_taps": [...], "transform_kinds": [...],
  "prune_threshold": null,
  "steps_per_epoch": 375,
  "run_id": "3f2a...",          # version 2: the run that wrote the file (or null)
  "skipped_steps": [17, 18],    # version 2: rows whose search step was skipped
  "provenance": {"library_version": "0.3.0", "created": "...", ...}
}
```

Version 1 files (without ``run_id`` and ``skipped_steps``) still load; files are written
as version 2.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distpro_lightning.files import atomic_save_figure, atomic_write_text
from distpro_lightning.functional.normalization import mean_logits, normalize
from distpro_lightning.process.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    READABLE_VERSIONS,
    ProcessFileError,
    check_record,
    checked_normalization,
    checked_skipped,
    json_safe,
    parse_process_dict,
    read_process_json,
    require,
)
from distpro_lightning.process.plots import log_process_figures, process_figure, process_summary
from distpro_lightning.process.transfer import remap_columns

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "DistillationProcess",
    "ProcessFileError",
    "atomic_write_text",
    "log_process_figures",
]


class DistillationProcess:
    """A distillation process ``A = {a~_t}``: one row of raw pathway logits per step.

    Example:

    ```python
    p = DistillationProcess.load("process.json")
    p.logits              # [T_search, P]
    p.weights()           # normalised, [T_search, P]
    p.at(100, 5000)       # logits for step 100 of a 5000-step run
    p.plot("process.png")
    ```

    Args:
        pathway_names: the P pathway names.
        normalization: ``{"name": ..., "bias": g, "scale": s}``; weights are
            ``normalize(logits, name, bias) * scale`` (``scale > 0``).
        logits: initial rows ``[T, P]`` (may be empty).
        teacher_taps: the teacher taps of the search space (for the record).
        student_taps: the student taps (for the record).
        transform_kinds: the transform kinds (for the record).
        prune_threshold: tau used in the search (for the record).
        steps_per_epoch: optimizer steps per epoch of the search.
        provenance: free-form JSON-serialisable information (versions, models, data, seed).
        run_id: the identity of the run that makes this process (see
            `distpro_lightning.search.paths`); a file of another run is not replaced unasked.
        skipped_steps: indices of the rows whose search step was skipped (a non-finite loss
            or hypergradient).
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
        *,
        run_id: str | None = None,
        skipped_steps: Sequence[int] | None = None,
    ) -> None:
        self.pathway_names = list(pathway_names)
        require(len(self.pathway_names) > 0, "a process needs at least one pathway")
        dupes = sorted({n for n in self.pathway_names if self.pathway_names.count(n) > 1})
        require(not dupes, f"duplicate pathway names: {dupes}")
        self.normalization = checked_normalization(normalization)
        check_record(prune_threshold, steps_per_epoch, run_id)
        self.teacher_taps = list(teacher_taps) if teacher_taps is not None else None
        self.student_taps = list(student_taps) if student_taps is not None else None
        self.transform_kinds = list(transform_kinds) if transform_kinds is not None else None
        self.prune_threshold = prune_threshold
        self.steps_per_epoch = steps_per_epoch
        self.provenance = dict(provenance or {})
        self.run_id = run_id
        self._rows: list[Tensor] = []
        if logits is not None:
            rows = torch.as_tensor(logits, dtype=torch.float32)
            if rows.numel() == 0:
                rows = rows.reshape(0, len(self.pathway_names))
            require(rows.dim() == 2, f"logits must be 2-D [T, P], got shape {tuple(rows.shape)}")
            for row in rows:
                self.append(row)
        self._skipped = checked_skipped(list(skipped_steps or []), len(self._rows))

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

    @property
    def skipped_steps(self) -> list[int]:
        """Indices of the rows recorded with ``append(..., skipped=True)`` (increasing)."""
        return list(self._skipped)

    def append(self, row: Tensor, skipped: bool = False) -> None:
        """Record one step's logits ``[P]`` (copied to CPU float32); ``skipped=True`` marks a
        step whose update was skipped (written to the file as ``skipped_steps``)."""
        row = torch.as_tensor(row).detach().to("cpu", torch.float32).reshape(-1).clone()
        require(
            row.numel() == self.num_pathways,
            f"a row has {row.numel()} values but the process has {self.num_pathways} pathways",
        )
        require(bool(torch.isfinite(row).all()), "a row of logits holds non-finite values")
        self._rows.append(row)
        if skipped:
            self._skipped.append(len(self._rows) - 1)

    def truncate(self, length: int) -> None:
        """Keep only the first ``length`` rows (and their skipped-step marks)."""
        del self._rows[length:]
        self._skipped = [s for s in self._skipped if s < len(self._rows)]

    def weights(self, logits: Tensor | None = None) -> Tensor:
        """Normalised weights ``[T_search, P]`` (or of the given logits)."""
        logits = self.logits if logits is None else logits
        n = self.normalization
        return normalize(logits, n["name"], float(n["bias"])) * float(n["scale"])

    def searched_steps(self) -> list[int]:
        """The rows whose alpha the search updated (the others hold the previous weights):
        every row after the warm-up, or every ``search_every_n_steps``-th one, as the
        provenance's ``run_settings`` records (all rows for files without it)."""
        run = self.provenance.get("run_settings") or {}
        warmup = int(run.get("warmup_steps", 0))
        every = int(run.get("search_every_n_steps", 1))
        return [t for t in range(len(self)) if t >= warmup and (t - warmup) % every == 0]

    def final(self) -> Tensor:
        """The last recorded row (the paper's "use alpha_T" ablation)."""
        require(len(self) > 0, "the process has no rows")
        return self._rows[-1].clone()

    def at(self, step: int, total_steps: int) -> Tensor:
        """Logits for ``step`` of a run of ``total_steps`` steps: linear interpolation at
        ``u = step * (T_search - 1) / (total_steps - 1)``, clamped to the recorded range."""
        require(len(self) > 0, "the process has no rows")
        t_search = len(self)
        if t_search == 1 or total_steps <= 1:
            return self._rows[0].clone() if t_search == 1 or step <= 0 else self._rows[-1].clone()
        u = min(max(step, 0) * (t_search - 1) / (total_steps - 1), t_search - 1)
        lo = int(math.floor(u))
        hi = min(lo + 1, t_search - 1)
        frac = u - lo
        return (1.0 - frac) * self._rows[lo] + frac * self._rows[hi]

    def interpolate(self, total_steps: int) -> DistillationProcess:
        """A copy stretched or shrunk to ``total_steps`` rows with `at` (a new
        process: see `with_rows`)."""
        return self.with_rows(torch.stack([self.at(t, total_steps) for t in range(total_steps)]))

    def smoothed(self, window: int) -> DistillationProcess:
        """A copy whose rows are the centred moving average of ``window`` rows (an odd
        number; the ends repeat the first and last row), e.g. to replay a noisy search more
        smoothly (a new process: see `with_rows`)."""
        require(
            isinstance(window, int) and window >= 1 and window % 2 == 1,
            f"the smoothing window must be an odd number of rows >= 1, got {window!r}",
        )
        if window == 1 or len(self) < 2:
            return self.with_rows(self.logits)
        half = window // 2
        rows = self.logits.T.unsqueeze(1)  # [P, 1, T]
        padded = torch.nn.functional.pad(rows, (half, half), mode="replicate")
        kernel = torch.full((1, 1, window), 1.0 / window)
        return self.with_rows(torch.nn.functional.conv1d(padded, kernel).squeeze(1).T)

    @classmethod
    def average(cls, processes: Sequence[DistillationProcess]) -> DistillationProcess:
        """The process whose weights at every row are the mean of these processes' weights
        (e.g. several searches of one recipe, replayed as one process that averages out
        each search's draw), stored as logits of the same normalisation at the sources'
        level (`functional.normalization.mean_logits`: one process comes back as itself).

        The processes must share their pathways (in order), normalisation, number of rows
        and steps per epoch (``interpolate`` them, or ``distpro process export --steps N``,
        to one length first). The result keeps the provenance the sources share, lists
        each source under ``provenance["averaged_from"]`` (run id, fingerprint and what
        differs), is ``created`` now and, like every new process, has no run id."""
        require(len(processes) >= 1, "average() needs at least one process")
        first = processes[0]
        for i, p in enumerate(processes[1:], start=1):
            _check_averageable(first, p, i)
        require(len(first) > 0, "average(): the processes have no rows")
        n = first.normalization
        stacked = torch.stack([p.logits for p in processes])
        rows = mean_logits(stacked, n["name"], float(n["bias"]))
        shared = {
            key: value
            for key, value in first.provenance.items()
            if all(key in p.provenance and p.provenance[key] == value for p in processes)
        }
        sources = [
            {
                "run_id": p.run_id,
                "fingerprint": p.fingerprint(),
                **{k: v for k, v in p.provenance.items() if k not in shared},
            }
            for p in processes
        ]
        taus = {p.prune_threshold for p in processes}
        out = first.with_rows(rows)
        out.prune_threshold = first.prune_threshold if len(taus) == 1 else None
        out.provenance = {**shared, "created": _now(), "averaged_from": sources}
        return out

    def with_rows(self, rows: Tensor) -> DistillationProcess:
        """A new process with these rows and this one's pathways and record. Its
        ``run_id`` is ``None`` and it has no skipped steps: both belong to the rows of
        the run that searched them."""
        return self.like(self.pathway_names, rows, same_rows=False)

    def fingerprint(self) -> str:
        """SHA-256 of the names, normalisation and logits (identifies a process on resume)."""
        h = hashlib.sha256()
        h.update(json.dumps([self.pathway_names, self.normalization], sort_keys=True).encode())
        h.update(self.logits.numpy().tobytes())
        return h.hexdigest()[:16]

    def like(
        self, names: Sequence[str], rows: Tensor, same_rows: bool = True
    ) -> DistillationProcess:
        """A process with these pathway ``names`` and ``rows`` and this one's record;
        ``same_rows=False`` drops ``run_id`` and skipped steps (the rows are new)."""
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
            run_id=self.run_id if same_rows else None,
            skipped_steps=self._skipped if same_rows else None,
        )

    # ------------------------------------------------------------------ transfer
    def remap(
        self, target_names: Sequence[str], pathway_map: Mapping[str, str] | str | None = None
    ) -> DistillationProcess:
        """This process with its columns arranged for a module whose pathways are
        ``target_names`` (paper Table 3: transfer).

        ``pathway_map`` maps each target pathway name to a pathway name of this process;
        ``"position"`` maps by position (same number of pathways needed); ``None`` requires
        identical names. A mismatch raises `ProcessFileError` listing the missing and
        extra pathways.
        """
        target_names = list(target_names)
        if pathway_map is None and target_names == self.pathway_names:
            return self
        index = remap_columns(self.pathway_names, target_names, pathway_map)
        return self.like(target_names, self.logits[:, index])

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
            "run_id": self.run_id,
            "skipped_steps": self.skipped_steps,
            "provenance": self.provenance,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the process as JSON, atomically (temporary file + rename); temporary files
        of earlier writes that were killed are removed first."""
        data = self.to_dict()
        data["provenance"], changed = json_safe(self.provenance)
        if changed:
            warnings.warn(
                f"Process file {str(path)!r}: {', '.join(changed[:5])}"
                f"{' ...' if len(changed) > 5 else ''} held a non-finite number or a value "
                "JSON cannot hold; written as null (or as text). The rows are unaffected.",
                stacklevel=2,
            )
        text = json.dumps(data, indent=1, allow_nan=False) + "\n"
        atomic_write_text(Path(path).expanduser(), text)

    @classmethod
    def from_dict(cls, data: Any) -> DistillationProcess:
        """Validate and build from a decoded JSON object."""
        kw = parse_process_dict(data)
        kw["logits"] = torch.tensor(kw["logits"], dtype=torch.float32)
        return cls(**kw)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DistillationProcess:
        """Read and validate a process file; a bad file raises `ProcessFileError`,
        a missing one ``FileNotFoundError``, a directory ``IsADirectoryError``."""
        path = Path(path).expanduser()
        if path.is_dir():
            inside = sorted(p.name for p in path.glob("*.json"))[:5]
            hint = f" JSON files in it: {', '.join(inside)}." if inside else ""
            raise IsADirectoryError(
                f"{str(path)!r} is a directory, not a process file: give the path of the "
                f"process JSON file (e.g. {str(path / 'process.json')!r}).{hint}"
            )
        if not path.is_file():
            raise FileNotFoundError(f"No process file at {str(path)!r}.")
        data = read_process_json(path)
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
        return process_figure(self, kind)

    def plot(self, path: str | os.PathLike[str], kind: str = "lines") -> Path:
        """Save `figure` as an image, atomically (format from the suffix, e.g. ``.png``)."""
        require(len(self) > 0, "the process has no rows to plot")
        return atomic_save_figure(Path(path).expanduser(), self.figure(kind))

    def summary(self) -> str:
        """A human-readable summary: size, normalisation, skipped steps, first/last weights
        per pathway, provenance."""
        return process_summary(self)


def _check_averageable(first: DistillationProcess, other: DistillationProcess, i: int) -> None:
    """Refuse averaging ``other`` (process ``i``) with ``first``: another space or length."""
    fix = (
        "average processes of one search space and length (bring them to one length with "
        "distpro process export --steps N, or DistillationProcess.interpolate)"
    )
    if other.pathway_names != first.pathway_names:
        mine, theirs = set(first.pathway_names), set(other.pathway_names)
        if mine == theirs:
            require(
                False,
                f"average(): process {i} differs from process 0 in its pathway order; put its "
                "columns in process 0's order first (DistillationProcess.remap(names))",
            )
        what = f"pathways (missing {sorted(mine - theirs)}, extra {sorted(theirs - mine)})"
        require(False, f"average(): process {i} differs from process 0 in its {what}; {fix}")
    for what, mine, theirs in (
        ("normalization", first.normalization, other.normalization),
        ("number of rows", len(first), len(other)),
        ("steps per epoch", first.steps_per_epoch, other.steps_per_epoch),
    ):
        require(
            mine == theirs,
            f"average(): process {i} differs from process 0 in its {what} ({theirs!r} against "
            f"{mine!r}); {fix}",
        )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
