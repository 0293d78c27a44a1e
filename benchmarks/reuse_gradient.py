"""What ``reuse_training_gradient`` changes: the same search with and without it, step by step.

    python -m benchmarks.reuse_gradient --steps 60 --out benchmarks/results/reuse_gradient.json

Two searches from the same weights on the same batches (``SearchStep``, the object
``ProcessSearchCallback`` runs, then the module's real update), Digits 8x8, resnet14 ->
resnet8, SGD momentum 0.9. Without reuse, the real update uses the training gradient at the
new logits ``a_{t+1}``; with reuse, the virtual step's gradient at ``a_t`` (one step of lag).
Reported: the lag at every step of the exact run, ``||g(a_t) - g(a_{t+1})|| / ||g(a_{t+1})||``
(student gradient), and after ``--steps`` steps the difference of the processes (logits,
pruned set at ``tau``) and of the students (relative parameter distance, held-out accuracy).
The time saved is measured side by side by ``benchmarks/step_cost.py``
(``search_reuse_over_search``, ``fit_search_reuse_over_retrain``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics

import torch

from benchmarks.build import build_module
from distpro_lightning import DistProModule, SearchSettings, SearchStep
from distpro_lightning.data import DigitsDataModule
from distpro_lightning.files import atomic_write_text


def _student_grad(m: DistProModule, batch) -> torch.Tensor:
    m = copy.deepcopy(m)
    m.zero_grad()
    m.training_loss(batch)[0].backward()
    return torch.cat([p.grad.reshape(-1) for p in m.student.parameters()])


def search(m: DistProModule, batches: list, reuse: bool, lag: bool) -> tuple[list, list]:
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    step = SearchStep(m, opt, SearchSettings(reuse_training_gradient=reuse))
    rows, lags = [], []
    for train, val in batches:
        g_t = _student_grad(m, train) if lag else None
        step(train, val, step=0)
        loss = m.take_reused_gradient().surrogate_loss() if reuse else m.training_loss(train)[0]
        loss.backward()
        if lag:
            g_t1 = torch.cat([p.grad.reshape(-1) for p in m.student.parameters()])
            lags.append(float((g_t - g_t1).norm() / g_t1.norm()))
        opt.step()
        opt.zero_grad()
        m.step_context = None
        rows.append(m.alpha_logits.detach().clone())
    return rows, lags


def accuracy(m: DistProModule, loader) -> float:
    m.eval()
    with torch.no_grad():
        hits = sum(int((m.student(x).argmax(1) == y).sum()) for x, y in loader)
    m.train()
    return hits / len(loader.dataset)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tau", type=float, default=0.5)
    p.add_argument("--out", default="benchmarks/results/reuse_gradient.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dm = DigitsDataModule(batch_size=args.batch, mode="search", seed=0)
    dm.setup("fit")
    train, val = dm.train_dataloader(), dm.search_val_dataloader()
    torch.manual_seed(0)
    batches, it, itv = [], iter(train), iter(val)
    while len(batches) < args.steps:
        try:
            batches.append((next(it), next(itv)))
        except StopIteration:
            it, itv = iter(train), iter(val)
    torch.manual_seed(0)
    m0 = build_module(
        DistProModule,
        student="resnet8",
        teacher="resnet14",
        num_classes=10,
        in_channels=1,
        input_shape=[1, 8, 8],
        prune_threshold=args.tau,
        log_pathway_losses=False,
    ).train()
    exact, reuse = copy.deepcopy(m0), copy.deepcopy(m0)
    rows_e, lags = search(exact, batches, reuse=False, lag=True)
    rows_r, _ = search(reuse, batches, reuse=True, lag=False)
    le, lr_ = torch.stack(rows_e), torch.stack(rows_r)
    pe = torch.cat([q.detach().reshape(-1) for q in exact.student.parameters()])
    pr = torch.cat([q.detach().reshape(-1) for q in reuse.student.parameters()])
    we, wr = exact.alpha_weights(le[-1]), reuse.alpha_weights(lr_[-1])
    test = dm.search_val_dataloader()
    result = {
        "steps": args.steps,
        "gradient_lag_rel": {
            "median": statistics.median(lags),
            "max": max(lags),
            "per_step": lags,
        },
        "logits_max_abs_diff_final": float((le[-1] - lr_[-1]).abs().max()),
        "logits_max_abs_diff_any_step": float((le - lr_).abs().max()),
        "logits_moved_max_exact": float((le[-1] - 1).abs().max()),
        "weights_cosine_final": float(torch.nn.functional.cosine_similarity(we, wr, dim=0)),
        "pruned_exact": int((le[-1] < args.tau).sum()),
        "pruned_reuse": int((lr_[-1] < args.tau).sum()),
        "pruned_set_disagreements": int(((le[-1] < args.tau) != (lr_[-1] < args.tau)).sum()),
        "student_rel_param_distance": float((pe - pr).norm() / pe.norm()),
        "search_held_out_accuracy": {
            "exact": accuracy(exact, test),
            "reuse": accuracy(reuse, test),
        },
        "setup": "Digits 8x8, resnet14 (untrained, by name) -> resnet8, 3 transforms, all "
        f"connections, batch {args.batch}, SGD lr 0.05 momentum 0.9 wd 5e-4, FD, Adam on alpha",
    }
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "gradient_lag_rel"}, indent=1))
    print("lag median/max", result["gradient_lag_rel"]["median"], result["gradient_lag_rel"]["max"])


if __name__ == "__main__":
    main()
