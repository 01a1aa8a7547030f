"""What the RL agent acts in: SPiRL's skill space, or the flat baselines' action space.

Both give the SAC module the same small interface, so SPiRL, SSP, SAC, BC+SAC and the flat
prior all run on one algorithm (docs/algorithm.md, section 2):

    state_dim, latent_dim       sizes of s and of the agent's action (skill z or env action)
    horizon                     env steps per agent decision (H for skills, 1 for flat)
    action_scale                agent actions are action_scale * tanh(u)
    env_config                  the demonstrations' EnvConfig dict (or None)
    state_mean / state_std      input normalisation for a fresh policy
    prior                       the learned prior's BlockMLP (None: nothing learned)
    prior_dist(s)               the learned prior over the pre-tanh u
    low_level(s, z)             env actions in [-1, 1]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pourlit.skills.nets import DiagGaussian


class SkillSpace(nn.Module):
    """Skills of a closed-loop skill checkpoint: z in [-m, m]^n_z, decoded by the frozen
    closed-loop decoder into env actions for H steps.

    ``ll_squash``: ``clip`` (clamp the decoder's actions to [-1, 1]) or ``tanh`` (spirl.md);
    see ``SACModule`` for why clip is the default.
    """

    def __init__(self, skills: Any, action_scale: float = 2.0, ll_squash: str = "clip") -> None:
        super().__init__()
        if ll_squash not in ("tanh", "clip"):
            raise ValueError(f"ll_squash must be 'tanh' or 'clip', got {ll_squash!r}")
        self.skills = skills  # pourlit.skills.SkillPrior (frozen)
        self.state_dim, self.latent_dim = skills.state_dim, skills.latent_dim
        self.env_action_dim, self.horizon = skills.action_dim, skills.horizon
        self.action_scale, self.ll_squash = float(action_scale), ll_squash
        self.env_config: dict | None = skills.env_config
        self.register_buffer("state_mean", skills.state_mean.clone())
        self.register_buffer("state_std", skills.state_std.clone())

    @property
    def prior(self) -> nn.Module:
        return self.skills.prior

    def prior_dist(self, states: torch.Tensor) -> DiagGaussian:
        return self.skills.prior_dist(states)

    def low_level(self, states: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        a = self.skills.decode(states, z)
        a = torch.tanh(a) if self.ll_squash == "tanh" else a
        return a.clamp(-1.0, 1.0)


class FlatSpace(nn.Module):
    """Raw env actions a = tanh(u) in [-1, 1]^d_a, one per env step.

    ``action_prior``: a ``pourlit.skills.ActionPrior`` (the one-step prior / BC policy), or
    None for plain SAC; then ``state_dim`` / ``action_dim`` / ``env_config`` must be given and
    states are not normalised.
    """

    def __init__(
        self,
        action_prior: Any | None = None,
        state_dim: int | None = None,
        action_dim: int | None = None,
        env_config: dict | None = None,
    ) -> None:
        super().__init__()
        self.action_prior = action_prior
        if action_prior is not None:
            state_dim, action_dim = action_prior.state_dim, action_prior.action_dim
            env_config = action_prior.env_config
            mean, std = action_prior.state_mean.clone(), action_prior.state_std.clone()
        elif state_dim is None or action_dim is None:
            raise ValueError("FlatSpace without an action prior needs state_dim and action_dim")
        else:
            mean, std = torch.zeros(state_dim), torch.ones(state_dim)
        self.state_dim, self.latent_dim = int(state_dim), int(action_dim)
        self.env_action_dim, self.horizon, self.action_scale = int(action_dim), 1, 1.0
        self.env_config = env_config
        self.register_buffer("state_mean", mean)
        self.register_buffer("state_std", std)

    @property
    def prior(self) -> nn.Module | None:
        return None if self.action_prior is None else self.action_prior.prior

    def prior_dist(self, states: torch.Tensor) -> DiagGaussian:
        if self.action_prior is None:
            raise RuntimeError("this flat action space has no learned prior (plain SAC)")
        return self.action_prior.prior_dist(states)

    def low_level(self, states: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z.clamp(-1.0, 1.0)
