"""A search that runs until it is killed: 4 steps per epoch, the process written at every
epoch end only; prints the number of finished optimizer steps after each one."""

import sys

import torch

torch.set_num_threads(1)

from lightning.pytorch import Trainer  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

from distpro_lightning import DistillationConfig, DistProModule, ProcessSearchCallback  # noqa: E402
from distpro_lightning.data import DigitsDataModule  # noqa: E402


class Progress(Callback):
    def on_train_batch_end(self, trainer, *args) -> None:
        print(trainer.global_step, flush=True)


torch.manual_seed(0)
module = DistProModule(
    student="resnet8",
    teacher="resnet14",
    num_classes=10,
    in_channels=1,
    distillation=DistillationConfig(input_shape=[1, 8, 8], transforms=["conv_bn"]),
    log_pathway_losses=False,
)
search = ProcessSearchCallback(
    output={"save_path": sys.argv[1], "save_every_n_steps": 0, "plot": False}
)
trainer = Trainer(
    accelerator="cpu",
    max_epochs=1000,
    limit_train_batches=4,
    limit_val_batches=0,
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    callbacks=[search, Progress()],
)
trainer.fit(module, datamodule=DigitsDataModule(batch_size=16, mode="search", subset=128))
