"""A 2-process CPU (gloo) DDP search, run by tests/test_ddp.py as a subprocess.

usage: python ddp_search.py OUT_DIR DEVICES BATCH VAL_BATCH MODEL(resnet|vit) STEPS
Writes OUT_DIR/alpha_rank{r}.pt (alpha after every step, per rank) and the process file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from distpro_lightning import (
    DistillationConfig,
    DistProModule,
    OptimizerConfig,
    ProcessSearchCallback,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import TinyViT  # noqa: E402  (the tests' helpers: tests/conftest.py)

torch.set_num_threads(1)


class Record(Callback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.rows: list[torch.Tensor] = []
        self.val_steps: list[list[float]] = []  # [epoch, this rank's held-out loss] per step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append(pl_module.alpha_logits.detach().clone())
        step_loss = trainer.callback_metrics.get("search/val_loss_step")  # this rank's
        if step_loss is not None:
            self.val_steps.append([trainer.current_epoch, float(step_loss)])

    def on_train_end(self, trainer, pl_module):
        rank = trainer.global_rank
        torch.save(torch.stack(self.rows), self.out / f"alpha_rank{rank}.pt")
        epoch_loss = trainer.callback_metrics.get("search/val_loss")  # the last epoch's
        record = {
            "steps": self.val_steps,
            "epoch": None if epoch_loss is None else float(epoch_loss),
        }
        (self.out / f"val_loss_rank{rank}.json").write_text(json.dumps(record))


def main() -> None:
    out, devices, batch, val_batch, model, steps = sys.argv[1:7]
    out = Path(out)
    seed_everything(0)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    if model == "vit":
        module = DistProModule(
            student=TinyViT(16),
            teacher=TinyViT(32),
            num_classes=10,
            distillation=DistillationConfig(
                student_taps=["blocks.0", "blocks.1"],
                teacher_taps=["blocks.0", "blocks.1"],
                transforms=["token"],
                distance="mse",
                input_shape=[1, 8, 8],
            ),
            optimizer=OptimizerConfig(lr=0.1),
            log_pathway_losses=False,
        )
        # SGD on the logits: Adam's first steps are ~lr*sign(g), which turns rounding-level
        # differences of near-zero components into lr-sized ones.
        method, alpha_opt, alpha_lr = "exact", "sgd", 20.0
    else:
        module = DistProModule(
            student="resnet8",
            teacher="resnet14",
            num_classes=10,
            in_channels=1,
            distillation=DistillationConfig(input_shape=[1, 8, 8], transforms=["conv_bn", "attn2"]),
            optimizer=OptimizerConfig(lr=0.05),
            log_pathway_losses=False,
        )
        method, alpha_opt, alpha_lr = "finite_difference", "adam", 0.1
    train_set = TensorDataset(x[:512], y[:512])

    class Data(LightningDataModule):
        def train_dataloader(self):
            # rank r takes samples r, r + W, r + 2W, ...: the union of the ranks' batches is
            # the one-process batch of W times the size.
            t = self.trainer
            sampler = DistributedSampler(
                train_set, num_replicas=t.world_size, rank=t.global_rank, shuffle=False
            )
            return DataLoader(train_set, batch_size=int(batch), sampler=sampler)

    search = ProcessSearchCallback(
        hypergradient=method,
        alpha={"lr": alpha_lr, "optimizer": alpha_opt},
        output={"save_path": str(out / "process.json"), "plot": False},
    )
    search.search_val_loader = DataLoader(
        TensorDataset(x[512:768], y[512:768]), batch_size=int(val_batch)
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=int(devices),
        strategy="ddp" if int(devices) > 1 else "auto",
        max_steps=int(steps),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[search, Record(out)],
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=Data())


if __name__ == "__main__":
    main()
