"""Bad or unusual inputs of the search (non-finite steps, resumes, held-out loaders, heads
left out of the optimizer, extreme settings): the error each must give, or the right
result, and that nothing was lost (`bad_inputs.check_case`)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import search_cases as sc  # noqa: E402
from bad_inputs import (  # noqa: E402
    Case,
    check_case,
)

CASES = [
    Case("search: NaN batch skipped, student intact", sc.nan_batch_skipped),
    Case(
        "search: NaN run stops",
        sc.nan_run_stops,
        RuntimeError,
        ("3 consecutive steps", "non-finite", "saved at", "max_non_finite_steps"),
    ),
    Case("search: reused callback, new process", sc.reused_callback_new_process),
    Case(
        "search: reused callback, fixed save_path",
        sc.reused_callback_fixed_path,
        FileExistsError,
        ("another search",),
    ),
    Case("search: resume keeps run id and skipped steps", sc.resume_keeps_skipped_steps),
    Case("search: resume, other alpha_lr", sc.resume_other_alpha_lr),
    Case("search: resume, other alpha_optimizer", sc.resume_other_optimizer),
    Case("held-out: sampler kept", sc.held_out_sampler_kept),
    Case("held-out: batch_sampler kept", sc.held_out_batch_sampler_kept),
    Case("held-out: pin_memory, worker_init_fn kept", sc.held_out_settings_kept),
    Case(
        "held-out: IterableDataset",
        lambda t: sc.HeldOutStream(torch.utils.data.DataLoader(sc.Stream(), batch_size=2)),
        TypeError,
        ("IterableDataset", "map-style", "TensorDataset"),
    ),
    Case(
        "held-out: dataset without len",
        lambda t: sc.HeldOutStream(torch.utils.data.DataLoader(sc.NoLen(), batch_size=2)),
        TypeError,
        ("has no len()",),
    ),
    Case(
        "held-out: batch_size=None",
        lambda t: sc.HeldOutStream(torch.utils.data.DataLoader(sc.Indexed(), batch_size=None)),
        ValueError,
        ("batch_size=None",),
    ),
    Case(
        "search: heads not in the optimizer",
        sc.heads_missing_search,
        RuntimeError,
        ("ProcessSearchCallback", "heads.", "never train", "distill_heads.parameters()"),
    ),
    *(
        Case(
            f"search and replay in one Trainer: {order}",
            sc.two_weight_drivers(*factories),
            RuntimeError,
            ("ProcessSearchCallback", "ProcessScheduleCallback", "keep one", "enabled=False"),
        )
        for order, factories in {
            "search first": (sc.search_cb, sc.uniform_replay),
            "replay first": (sc.uniform_replay, sc.search_cb),
        }.items()
    ),
    Case(
        "search beside a disabled replay: runs",
        sc.two_weight_drivers(sc.search_cb, lambda: sc.ProcessScheduleCallback(enabled=False)),
    ),
    Case("alpha_lr extreme: warning", sc.warns("alpha_lr=5 is extreme", alpha_lr=5.0)),
    *(
        Case(
            f"gradient clipping by {algorithm}: warning, the virtual step is unclipped",
            sc.warns(
                rf"gradient_clip_val=0.5, gradient_clip_algorithm='{algorithm}'\) clips the real",
                trainer={"gradient_clip_val": 0.5, "gradient_clip_algorithm": algorithm},
            ),
        )
        for algorithm in ("norm", "value")
    ),
    Case("search over a loader without len(): no warm-up warning", sc.unknown_length_search),
    Case("epsilon tiny: warning", sc.warns("rounding noise", epsilon=1e-9)),
    Case("all weights 0: warning", sc.collapse_warned),
    Case("defaults: no such warning", sc.no_warning_at_defaults),
]


# A NaN fed on purpose makes the search say several things at once; each case asserts its
# own message, and every message here is asserted where it is tested alone (test_guard,
# test_search_levers, test_search_bad_inputs' other cases)
@pytest.mark.filterwarnings("ignore:DistPro search. non-finite:UserWarning")
@pytest.mark.filterwarnings("ignore:DistPro search skipped:UserWarning")
# a 2-step fit with a long warm-up: the case asserts its own warning, the search adds this one
@pytest.mark.filterwarnings(
    "ignore:search.schedule.warmup_steps=.* covers the whole fit:UserWarning"
)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)
