"""``PredictionWriter``: Lightning's ``BasePredictionWriter`` that writes what
``trainer.predict`` / ``distpro predict`` returns (the student's logits) to one file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from distpro_lightning.files import atomic_write


class PredictionWriter(BasePredictionWriter):
    """Write the predictions of a ``trainer.predict`` run (``distpro predict``) to
    ``output_path`` at the end of the run, atomically, as a tensor file read back with
    ``torch.load(path, weights_only=True)``: ``{"predictions": [N, C] logits,
    "batch_indices": [N] sample indices or absent}`` (one entry per predict loader,
    ``predictions_<i>``, when there are several). Under DDP every rank writes its own share,
    ``<stem>.rank<r><suffix>``.

    ```yaml
    trainer:
      callbacks:
        - class_path: distpro_lightning.PredictionWriter
          init_args: {output_path: runs/predictions.pt}
    ```

    Args:
        output_path: the file to write.
        overwrite: replace an existing file (refused at the start of the run otherwise).
    """

    def __init__(self, output_path: str, overwrite: bool = False) -> None:
        super().__init__(write_interval="epoch")
        self.output_path = Path(output_path)
        self.overwrite = overwrite

    def path_for(self, trainer: pl.Trainer) -> Path:
        """This rank's file: ``output_path``, or ``<stem>.rank<r><suffix>`` under DDP."""
        if trainer.world_size == 1:
            return self.output_path
        p = self.output_path
        return p.with_name(f"{p.stem}.rank{trainer.global_rank}{p.suffix}")

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self.path_for(trainer)
        if path.exists() and not self.overwrite:
            raise FileExistsError(
                f"PredictionWriter: {str(path)!r} exists; give another output_path or "
                "overwrite=True (--trainer.callbacks.init_args.overwrite true)."
            )

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        several = bool(predictions) and isinstance(predictions[0], list)
        per_loader = list(predictions) if several else [predictions]
        # Lightning gives the indices per loader (a list of one for a single loader)
        indices = list(batch_indices) if batch_indices else [[]] * len(per_loader)
        out: dict[str, torch.Tensor] = {}
        for i, (preds, idx) in enumerate(zip(per_loader, indices)):
            tag = f"_{i}" if several else ""
            out[f"predictions{tag}"] = torch.cat([p.detach().cpu() for p in preds])
            flat = [int(j) for batch in idx or [] for j in batch]
            if flat:
                out[f"batch_indices{tag}"] = torch.tensor(flat)
        atomic_write(self.path_for(trainer), lambda fh: torch.save(out, fh))
