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
    wrap_env(env)               the env the agent acts in (``pourlit.rl.residual``'s adds
                                its base agent's action to the state; here the env itself)

``space_from_checkpoints`` builds the space a run's hyperparameters name; ``env_config`` and
``make_env`` build the environment the space's agent acts in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pourlit.skills.action_prior import ActionPrior, ActionPriorModule
from pourlit.skills.frozen import load_module
from pourlit.skills.module import SkillPrior, SkillPriorModule
from pourlit.skills.nets import DiagGaussian

if TYPE_CHECKING:
    from pourlit.sim.env import EnvConfig, PouringVecEnv


class SkillSpace(nn.Module):
    """Skills of a closed-loop skill checkpoint: z in [-m, m]^n_z, decoded by the frozen
    closed-loop decoder into env actions for H steps.

    ``ll_squash``: ``clip`` (clamp the decoder's actions to [-1, 1]) or ``tanh`` (SPiRL);
    docs/algorithm.md section 2 says why clip is the default.
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

    def wrap_env(self, env: PouringVecEnv) -> PouringVecEnv:
        return env


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

    def wrap_env(self, env: PouringVecEnv) -> PouringVecEnv:
        return env


def space_from_checkpoints(
    skill_ckpt: str | None,
    action_prior_ckpt: str | None,
    ckpt_hparams: dict | None = None,
    action_scale: float | None = None,
    ll_squash: str = "clip",
) -> tuple[SkillSpace | FlatSpace, dict | None]:
    """The agent's action space and the hyperparameters of the prior module it was built from.

    ``skill_ckpt``: skills of that closed-loop skill checkpoint (z = m tanh(u), m =
    ``action_scale`` or 2); ``action_prior_ckpt``: flat actions regularised by that action
    prior; neither: flat actions without a prior (plain SAC), sized for the pouring task.
    ``ckpt_hparams`` given (an RL checkpoint rebuilding itself): the prior module is built from
    them, untrained, and the file is not read (the RL checkpoint's state dict holds the
    weights); otherwise the checkpoint file is loaded and its hyperparameters returned.
    """
    for path, module_cls, frozen_cls, what in (
        (skill_ckpt, SkillPriorModule, SkillPrior, "skill"),
        (action_prior_ckpt, ActionPriorModule, ActionPrior, "action-prior"),
    ):
        if path is None:
            continue
        if ckpt_hparams is not None:
            frozen = frozen_cls(module_cls(**ckpt_hparams))
        else:
            frozen = frozen_cls(load_module(module_cls, path, what))
            ckpt_hparams = dict(frozen.hparams)
        if frozen_cls is ActionPrior:
            return FlatSpace(frozen), ckpt_hparams
        scale = 2.0 if action_scale is None else float(action_scale)
        return SkillSpace(frozen, scale, ll_squash), ckpt_hparams
    from pourlit.sim import task
    from pourlit.sim.env import EnvConfig

    space = FlatSpace(None, task.OBS_DIM, len(task.ACTION_NAMES), EnvConfig().to_dict())
    return space, ckpt_hparams


def env_config(space: SkillSpace | FlatSpace, overrides: dict | None, num_envs: int) -> EnvConfig:
    """The env the agent acts in: the demonstrations' env config (stored with the prior), then
    the run's ``env`` overrides, with ``num_envs`` envs."""
    from pourlit.sim.env import EnvConfig

    return EnvConfig.merged(dict(space.env_config or {}), overrides, num_envs=num_envs)


def make_env(space: Any, overrides: dict | None, num_envs: int, source: str | None) -> Any:
    """``space.wrap_env(PouringVecEnv(env_config(space, overrides, num_envs)))``, refused (``ValueError``
    naming the checkpoint ``source``) when its observation or action size is not the space's."""
    from pourlit.sim.env import PouringVecEnv

    env = space.wrap_env(PouringVecEnv(env_config(space, overrides, num_envs)))
    if env.obs_dim != space.state_dim or env.action_dim != space.env_action_dim:
        env.close()
        raise ValueError(
            f"{source}: checkpoint has state/action sizes {space.state_dim}/"
            f"{space.env_action_dim}, the env has {env.obs_dim}/{env.action_dim}; train it on "
            "this env's data"
        )
    return env
