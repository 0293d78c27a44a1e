"""``distpro demo`` (the README's first command) end to end at a small size: it searches in
the recommended space, replays the process, runs a baseline, and writes its summary."""

from __future__ import annotations

import json

import torch
from conftest import needs_fashion, quiet_trainer

from distpro_lightning import ClassifierModule, DistillationProcess
from distpro_lightning.cli.demo import demo_main
from distpro_lightning.data import DigitsDataModule


@needs_fashion
def test_the_demo_searches_the_recommended_space_and_reports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its relative defaults (runs/...) stay in here
    root = tmp_path / "demo"
    root.mkdir()
    torch.manual_seed(0)
    teacher = ClassifierModule("resnet20", 10, 1)  # a cached teacher (untrained: fast)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(teacher, DigitsDataModule(batch_size=16, subset=64))
    trainer.save_checkpoint(root / "teacher.ckpt", weights_only=True)
    argv = ["--root", str(root), "--data-dir", str(tmp_path / "data"), "--subset", "256"]
    argv += ["--search-epochs", "1", "--epochs", "1", "--methods", "hinton_kd", "distpro"]
    assert demo_main(argv) == 0
    process = DistillationProcess.load(root / "process.json")
    assert process.num_pathways == 11  # 9 conv_bn + logits->logits:kd + review->review:abf
    assert {"logits->logits:kd", "review->review:abf"} <= set(process.pathway_names)
    summary = json.loads((root / "summary.json").read_text())
    assert set(summary["results"]) == {"hinton_kd", "distpro"}
    assert all(0.0 <= v <= 1.0 for v in summary["results"].values())
    assert summary["args"]["space"] == "recommended"
