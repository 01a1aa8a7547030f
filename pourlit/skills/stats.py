"""State normalisation of the prior modules (``SkillPriorModule``, ``ActionPriorModule``):
``(s - state_mean) / state_std`` with buffers that travel inside the checkpoints, set from the
data module's statistics when a fresh fit starts."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn


def register_state_stats(
    module: nn.Module,
    state_dim: int,
    state_mean: list[float] | None,
    state_std: list[float] | None,
) -> None:
    """Register the ``state_mean`` / ``state_std`` buffers of a prior module (None: identity
    normalisation); they travel inside the module's checkpoints."""
    mean = torch.zeros(state_dim) if state_mean is None else torch.tensor(state_mean)
    std = torch.ones(state_dim) if state_std is None else torch.tensor(state_std)
    if mean.shape != (state_dim,) or std.shape != (state_dim,):
        raise ValueError(f"state_mean/state_std must have {state_dim} values")
    module.register_buffer("state_mean", mean.float())
    module.register_buffer("state_std", std.float().clamp(min=1e-6))


def adopt_data_stats(module: L.LightningModule, copy_stats: bool = True) -> None:
    """In ``on_fit_start`` of a fresh run: copy the data module's state normalisation into the
    module's ``state_mean`` / ``state_std`` buffers and hyperparameters (so checkpoints carry
    them) and remember how many bad rollout files it skipped (``module._skipped_files``).
    ``copy_stats=False``: keep the module's own statistics (a model started from a checkpoint)."""
    dm = getattr(module.trainer, "datamodule", None)
    module._skipped_files = getattr(dm, "num_skipped", None)
    mean, std = getattr(dm, "state_mean", None), getattr(dm, "state_std", None)
    if copy_stats and mean is not None and std is not None and module.global_step == 0:
        module.state_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        module.state_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp(min=1e-6))
        module.hparams.state_mean = module.state_mean.tolist()
        module.hparams.state_std = module.state_std.tolist()
