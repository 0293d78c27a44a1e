"""The index splits of the DistPro data modules, as pure functions of their settings."""

from __future__ import annotations

import torch


def compute_split(
    n: int,
    mode: str,
    seed: int,
    subset: int | None,
    search_val_fraction: float,
    val_fraction: float | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(train, search_val, val)`` sorted indices into a training set of ``n`` samples:
    the pool (all, or the first ``subset`` of a permutation seeded with ``seed``), less the
    validation part (``val_fraction``, its own seeded permutation), split 80/20 in search
    mode (``search_val_fraction``); ``None`` for a part that does not exist."""
    g = torch.Generator().manual_seed(seed)
    if subset is not None and subset < n:
        pool = torch.randperm(n, generator=g)[:subset]
    else:
        pool = torch.arange(n)
    val = None
    if val_fraction is not None:
        n_held = round(val_fraction * len(pool))
        if not 0 < n_held < len(pool):
            raise ValueError(
                f"val_fraction={val_fraction} of {len(pool)} training samples leaves "
                "an empty part; use more samples (larger `subset`) or another fraction"
            )
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed + 1))
        val, pool = pool[order[:n_held]].sort().values, pool[order[n_held:]]
    if mode == "retrain":
        return pool.sort().values, None, val
    n_val = round(search_val_fraction * len(pool))
    if not 0 < n_val < len(pool):
        raise ValueError(
            f"search split of {len(pool)} training samples with search_val_fraction="
            f"{search_val_fraction} leaves an empty part; use more samples "
            "(larger `subset`) or another fraction"
        )
    perm = pool[torch.randperm(len(pool), generator=g)]
    return perm[n_val:].sort().values, perm[:n_val].sort().values, val


def test_subset(n: int, seed: int, subset: int | None) -> torch.Tensor:
    """The test indices: all ``n``, or the first ``subset`` of a permutation seeded with
    ``seed`` (sorted, so class-sorted test sets keep every class)."""
    if subset is not None and subset < n:
        g = torch.Generator().manual_seed(seed)
        return torch.randperm(n, generator=g)[:subset].sort().values
    return torch.arange(n)
