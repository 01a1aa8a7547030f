"""How a trained SAC module acts in a vectorised env, one decision clock per env (every H steps
for skills, every step for flat actions): used by the module's validation and by ``pourlit
evaluate``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class AgentPolicy:
    """A ``SACModule`` acting: every ``space.horizon`` steps of each env's own clock (H for
    skills, 1 for flat actions) a new agent action from ``module.act`` in ``mode``
    (``sampled``: a sample of pi, or with skill selection the best candidate by Q; ``mean``:
    z = action_scale * tanh(mu(s))), then the space's low level (the frozen decoder for skills)
    at every step. Used by the module's validation and by ``pourlit evaluate`` on RL
    checkpoints."""

    def __init__(self, module: Any, num_envs: int, mode: str = "sampled", seed: int = 0) -> None:
        self.module = module
        self.mode = mode
        self.gen = torch.Generator(device=module.device).manual_seed(seed)
        self.horizon = module.space.horizon
        self.clock = np.zeros(num_envs, dtype=np.int64)
        self.z = torch.zeros(num_envs, module.space.latent_dim, device=module.device)

    @property
    def name(self) -> str:
        """How it acts, e.g. ``sampled, best of 8 by Q`` or ``mean skill``."""
        if self.mode == "mean":
            return "mean skill"
        k = int(self.module.hparams.q_select)
        if k == 0 or not self.module.selecting:  # selection off, or before the critic warmup ended
            return "sampled"
        n = 2 * k if self.module.space.prior is not None else k
        return f"sampled, best of {n} by Q"

    def begin(self, ids: np.ndarray) -> None:
        self.clock[ids] = 0

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.to(self.module.device)
        new = np.flatnonzero(self.clock % self.horizon == 0)
        if len(new):
            self.z[new] = self.module.act(obs[new], self.mode, generator=self.gen)
        self.clock += 1
        return self.module.low_level(obs, self.z).cpu()
