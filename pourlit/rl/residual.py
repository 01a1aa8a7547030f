"""Residual RL on top of a trained agent: the agent keeps acting, a residual policy corrects
every env action it takes.

    a_t = clip(a_base(s_t) + eps * r_t, -1, 1),   r_t = tanh(u_t),   u_t ~ pi_r(. | s_t, a_base(s_t))

(Residual RL, Johannink et al. 2019; ReSkill, Rana et al. 2022, trains the same kind of
residual under a skill decoder.) ``a_base`` is a frozen ``SACModule`` acting as it was
trained (its skills every H steps, by default the best candidate by Q, decoded at every
step); eps = ``residual_scale`` bounds how far the residual can move an action. The
residual agent is SAC on flat actions (``SACModule`` with ``base_ckpt``), one per env step,
regularised toward r = 0 (``prior="zero"``) or by plain SAC's entropy bonus, whose state is the env's
state with the base's action appended, ``x_t = concat(s_t, a_base(s_t))``: ``ResidualEnv``
hands out those states and ``ResidualSpace.low_level`` adds the correction. So the SAC
module, its rollout callback, validation and ``pourlit evaluate`` run a residual agent
unchanged.

Why: the skill decoder's imprecision bounds what any choice of skill reaches (the prior
and the RL agent above it fail by pouring beside the cup); a residual can move the bottle
by small corrections at every step, which no skill in the frozen decoder's repertoire does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from pourlit.rl.acting import AgentPolicy
from pourlit.rl.policies import TanhGaussianPolicy, initial_policy
from pourlit.skills.frozen import load_module
from pourlit.skills.nets import DiagGaussian

INIT_SIGMA = 0.3  # sigma of the fresh residual policy's pre-tanh Gaussian (mean 0)


class ResidualSpace(nn.Module):
    """The residual agent's action space (the interface of ``pourlit.rl.spaces``).

    ``base``: a trained ``SACModule`` (frozen here; its weights are part of this module's
    state, so a residual checkpoint rebuilds without the base's file). States are
    ``concat(s, a_base)`` (d_s + d_a), agent actions residuals r in [-1, 1]^d_a, one per
    env step; ``low_level(x, r) = clip(a_base + eps * r, -1, 1)``; no learned prior.
    """

    horizon = 1
    action_scale = 1.0
    prior = None

    def __init__(self, base: nn.Module, residual_scale: float = 0.2) -> None:
        super().__init__()
        if not 0.0 < residual_scale <= 2.0:
            raise ValueError(f"residual_scale must be in (0, 2], got {residual_scale}")
        self.base = base.eval().requires_grad_(False)
        inner = base.space
        d_s, d_a = int(inner.state_dim), int(inner.env_action_dim)
        self.state_dim, self.latent_dim, self.env_action_dim = d_s + d_a, d_a, d_a
        self.residual_scale = float(residual_scale)
        self.env_config: dict | None = inner.env_config
        self.register_buffer("state_mean", torch.cat((inner.state_mean, torch.zeros(d_a))))
        self.register_buffer("state_std", torch.cat((inner.state_std, torch.ones(d_a))))
        # the base's update count decides whether it selects skills by Q (SACModule.selecting);
        # a buffer, so a base rebuilt from hyperparameters acts as the trained one did
        self.register_buffer("base_updates", torch.tensor(int(base.updates)))
        self.register_load_state_dict_post_hook(_restore_base_updates)

    def prior_dist(self, states: torch.Tensor) -> DiagGaussian:
        """N(0, ``INIT_SIGMA``^2) over the pre-tanh residual at every state: the fresh residual
        policy (``SACModule``'s ``prior="zero"`` keeps the policy near it)."""
        mu = states.new_zeros(states.shape[0], self.latent_dim)
        return DiagGaussian(mu, torch.full_like(mu, math.log(INIT_SIGMA)))

    def low_level(self, states: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``clip(a_base + eps * r, -1, 1)``: ``a_base`` is the last d_a entries of the state."""
        return (states[..., -self.env_action_dim :] + self.residual_scale * r).clamp(-1.0, 1.0)

    def train(self, mode: bool = True) -> ResidualSpace:
        return super().train(False)  # the base is always frozen

    def wrap_env(self, env: Any) -> ResidualEnv:
        """``env`` with the base acting inside it (``ResidualEnv``)."""
        mode = str(self.base.hparams.eval_mode)
        return ResidualEnv(env, AgentPolicy(self.base, env.num_envs, mode))


def load_base_agent(cls: type, path: str, hparams: dict | None) -> nn.Module:
    """The frozen base agent, a ``cls`` (``SACModule``): rebuilt from ``hparams`` (a residual
    checkpoint holds its weights) or loaded from the RL checkpoint ``path``."""
    if hparams is not None:
        return cls(**hparams)
    return load_module(cls, path, "RL")


def _restore_base_updates(space: ResidualSpace, incompatible_keys: Any) -> None:
    space.base.updates = int(space.base_updates)


def residual_policy(space: ResidualSpace, hidden: int) -> TanhGaussianPolicy:
    """A fresh residual policy whose every action starts as the base's: the output layer's
    weights are zero, its bias gives mu = 0 and sigma = ``INIT_SIGMA`` for every state."""
    policy = initial_policy(space, False, hidden)
    out: nn.Linear = policy.net[-1]
    with torch.no_grad():
        out.weight.zero_()
        out.bias.copy_(
            torch.tensor([0.0] * space.latent_dim + [math.log(INIT_SIGMA)] * space.latent_dim)
        )
    return policy


class ResidualEnv:
    """A vectorised pouring env (``PouringVecEnv``) whose observations carry the base agent's
    action: ``reset`` / ``step`` return ``concat(s, a_base(s))`` (N, d_s + d_a), and
    ``info["final_obs"]`` likewise (the base's action there with the skill it was running).
    ``step`` takes the env actions themselves (the residual space's ``low_level`` has added the
    correction). The base runs its own decision clock, restarted at every episode start, and
    draws its skills from its own generator, seeded by ``reset(seed)``; ``state_dict`` holds
    both with the env's, so a resumed run continues exactly. Everything else (``cfg``,
    ``model``, ``mj_data``, ``stats`` ...) is the wrapped env's."""

    def __init__(self, env: Any, base: AgentPolicy) -> None:
        self.env, self.base = env, base
        self.num_envs, self.action_dim = env.num_envs, env.action_dim
        self.obs_dim = env.obs_dim + env.action_dim

    def __getattr__(self, name: str) -> Any:
        if name in ("env", "base"):  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.env, name)

    def _with_base_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The base acts on ``obs`` (its clock advances one step): concat(s, a_base)."""
        return torch.cat((obs, self.base(obs).to(obs.dtype)), dim=-1)

    def reset(self, seed: int | list[int] | None = None) -> torch.Tensor:
        obs = self.env.reset(seed=seed)
        first = seed if isinstance(seed, int) else 0 if seed is None else int(seed[0])
        self.base.gen.manual_seed(first)
        self.base.begin(np.arange(self.num_envs))
        return self._with_base_action(obs)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        obs, reward, term, trunc, info = self.env.step(actions)
        ended = (term | trunc).cpu().numpy()
        if ended.any():
            final = info["final_obs"]
            with torch.no_grad():  # the skill each ended episode was running, at its last state
                a_final = self.base.low_level(final.to(self.base.z.device), self.base.z).cpu()
            info["final_obs"] = torch.cat((final, a_final.to(final.dtype)), dim=-1)
            self.base.begin(np.flatnonzero(ended))
        return self._with_base_action(obs), reward, term, trunc, info

    def state_dict(self) -> dict[str, Any]:
        return {  # the env's own keys, and the base's
            **self.env.state_dict(),
            "base_clock": torch.from_numpy(self.base.clock.copy()),
            "base_z": self.base.z.cpu().clone(),
            "base_generator": self.base.gen.get_state(),
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.env.load_state_dict(sd)
        self.base.clock[:] = sd["base_clock"].numpy()
        self.base.z.copy_(sd["base_z"])
        self.base.gen.set_state(sd["base_generator"])

    def close(self) -> None:
        self.env.close()
