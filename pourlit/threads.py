"""How many torch threads pourlit uses."""

from __future__ import annotations

import os


def limit_torch_threads() -> None:
    """pourlit's networks are small (128-256-wide MLPs/LSTMs, batches of 64-512) and its task
    code is many small torch ops per env step: intra-op threads gain little, and when another
    process holds a core their spin-waits make every step up to 100x slower (measured: 28 ms vs
    2.6 s per skill step on 2 busy cores; RL evaluation 43 vs ~300 env steps/s). Every command
    defaults to one thread; ``POURLIT_TORCH_THREADS=N`` overrides."""
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("POURLIT_TORCH_THREADS", "1"))))
