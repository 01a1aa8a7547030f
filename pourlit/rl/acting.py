"""How the agents act. ``act`` is how a ``SACModule`` chooses its agent actions z (the rollout
callback in training, ``AgentPolicy`` in validation and evaluation); ``skill_candidates`` is
its candidate set for selection by value (acting, and the critic target of the update).

A policy with a decision clock acts in a vectorised env: each env picks a new agent action z
every ``horizon`` steps of its own clock (restarted at every episode start) and turns (s, z)
into env actions at every step. ``AgentPolicy`` is a trained SAC module acting (the module's
validation and ``pourlit evaluate``); ``PriorPolicy`` is a skill checkpoint's prior rollouts
(``pourlit evaluate`` on a skill checkpoint, the learner of ``pourlit collect --learner``), on
the same clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pourlit.rl.select import best_by_q, candidates, squashed_mean, squashed_samples
from pourlit.skills.nets import DiagGaussian


@torch.no_grad()
def act(
    m: Any,
    states: torch.Tensor,
    mode: str = "sampled",
    warmup: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Agent actions z (N, n_z) of the ``SACModule`` ``m`` for raw states (N, d_s), as the
    agent executes them.

    ``mean``: z = m tanh(mu_pi(s) / c). ``best_mean``: of that and the learned prior's mean
    skill m tanh(mu_q_hat(s) / c), the one with the higher min_j Q_j(s, z) (IBRL's choice
    between its imitation and RL actors; without a learned prior, ``mean``).
    ``sampled``: z = m tanh(u / c), u ~ pi(.|s), or during ``warmup`` u ~ q_hat(.|s) where
    there is a learned prior (``prior="learned"``); once
    ``m.selecting`` (never during warmup), the best of ``skill_candidates`` by min_j Q_j(s, z).
    Noise comes from ``generator`` (else the global torch RNG, which training checkpoints, so a
    resumed run draws the same skills).
    """
    scale, w = m.space.action_scale, m.squash_width
    if mode == "mean":
        return squashed_mean(m.policy(states), scale, w)
    if mode == "best_mean":
        means = [squashed_mean(m.policy(states), scale, w)]
        if m.space.prior is not None:
            means.append(squashed_mean(m.space.prior_dist(states), scale, w))
        return best_by_q(m.critic, states, torch.stack(means))[0]  # of (1 or 2, N, n_z)
    if not warmup and m.selecting:
        cands = skill_candidates(m, states, generator)
        return best_by_q(m.critic, states, cands, selection_bonus(m, len(cands)))[0]
    learned_prior = warmup and m.hparams.prior == "learned"
    dist = m.space.prior_dist(states) if learned_prior else m.policy(states)
    return squashed_samples(dist, 1, scale, generator, w)[0]


@torch.no_grad()
def explore(m: Any, states: torch.Tensor, warmup: bool = False) -> torch.Tensor:
    """The agent actions z (N, n_z) the training rollouts execute at raw states (N, d_s).

    ``behaviour`` ``policy`` (SPiRL): ``act``'s sampled mode (the learned prior during
    ``warmup``). ``prior_mean``: the learned prior's mean skill, each decision replaced with
    probability p = ``behaviour_sample_prob`` by a sample of the prior, in warmup and after:

        z = m tanh(mu_q_hat(s) / c)            with probability 1 - p
        z = m tanh((mu + sigma eps) / c)       with probability p, eps ~ N(0, I)

    Every decision but the few sampled ones follows one plan, so an episode's return rates
    the decisions in it with little noise from the later ones: the critics learn Q of the
    prior's mean skill, and selection by Q (``q_select``, ``select_prior_mean``) improves on
    it by one step of policy iteration (BENCHMARKS.md: a critic of the prior's mean skill).
    Draws from the global torch RNG, which training checkpoints.
    """
    if m.hparams.behaviour == "policy":
        return act(m, states, "sampled", warmup=warmup)
    q, scale, w = m.space.prior_dist(states), m.space.action_scale, m.squash_width
    mean, sample = squashed_mean(q, scale, w), squashed_samples(q, 1, scale, None, w)[0]
    swap = torch.rand(mean.shape[0], device=mean.device) < float(m.hparams.behaviour_sample_prob)
    return torch.where(swap.unsqueeze(-1), sample, mean)


def selection_bonus(m: Any, n: int) -> torch.Tensor | None:
    """The ``bonus`` of ``best_by_q`` for ``n`` candidates of ``skill_candidates``: the prior's
    mean skill (the last one, with ``select_prior_mean``) is favoured by ``select_margin``, so a
    sample replaces it only where the critics value that sample higher by more than the margin
    (a value difference smaller than the critics' error is noise). None without a margin."""
    margin = float(m.hparams.get("select_margin") or 0.0)
    if margin == 0.0 or not m.hparams.get("select_prior_mean"):
        return None
    bonus = torch.zeros(n)
    bonus[-1] = margin
    return bonus


def skill_candidates(
    m: Any,
    states: torch.Tensor,
    generator: torch.Generator | None = None,
    pi: DiagGaussian | None = None,
    prior: DiagGaussian | None = None,
) -> torch.Tensor:
    """(2K, B, n_z): K squashed samples of pi(.|s) then K of the learned prior (K of pi only
    where the space has no learned prior), K = ``q_select`` (``pourlit.rl.select.candidates``);
    with ``select_prior_mean`` the prior's mean skill m tanh(mu_q_hat(s) / c) last (2K + 1).
    ``pi`` / ``prior``: the two distributions at ``states`` when the caller has them already."""
    pi = m.policy(states) if pi is None else pi
    if m.space.prior is None:
        prior = None
    elif prior is None:
        prior = m.space.prior_dist(states)
    k, scale, w = int(m.hparams.q_select), m.space.action_scale, m.squash_width
    cands = candidates(pi, prior, k, scale, generator, w)
    if m.hparams.get("select_prior_mean"):  # construction refuses it without a learned prior
        cands = torch.cat([cands, squashed_mean(prior, scale, w).unsqueeze(0)])
    return cands


class ClockedPolicy:
    """The clock: ``choose(states)`` gives new agent actions (M, n_z) for the envs at a
    decision, ``low_level(states, z)`` env actions (N, d_a) for all of them; ``begin(ids)``
    (the episode runner calls it at episode starts) restarts those envs' clocks."""

    def __init__(
        self, num_envs: int, horizon: int, latent_dim: int, device: torch.device | str = "cpu"
    ) -> None:
        self.horizon = horizon
        self.clock = np.zeros(num_envs, dtype=np.int64)
        self.z = torch.zeros(num_envs, latent_dim, device=device)

    def choose(self, states: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def low_level(self, states: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def begin(self, ids: np.ndarray) -> None:
        self.clock[ids] = 0

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        new = np.flatnonzero(self.clock % self.horizon == 0)
        if len(new):
            self.z[new] = self.choose(obs[new])
        self.clock += 1
        return self.low_level(obs, self.z)


class AgentPolicy(ClockedPolicy):
    """A ``SACModule`` acting: every ``space.horizon`` steps (H for skills, 1 for flat
    actions) a new agent action from ``act`` in ``mode`` (``sampled``: a sample of pi,
    or with skill selection the best candidate by Q; ``mean``: z = action_scale * tanh(mu(s))),
    then the space's low level (the frozen decoder for skills) at every step."""

    def __init__(self, module: Any, num_envs: int, mode: str = "sampled", seed: int = 0) -> None:
        space = module.space
        super().__init__(num_envs, space.horizon, space.latent_dim, module.device)
        self.module = module
        self.mode = mode
        self.gen = torch.Generator(device=module.device).manual_seed(seed)

    @property
    def name(self) -> str:
        """How it acts, e.g. ``sampled, best of 8 by Q`` or ``mean skill``."""
        if self.mode == "mean":
            return "mean skill"
        if self.mode == "best_mean":
            return "mean skill or the prior's, best by Q"
        k = int(self.module.hparams.q_select)
        if k == 0 or not self.module.selecting:  # selection off, or before the critic warmup ended
            return "sampled"
        n = 2 * k if self.module.space.prior is not None else k
        hp = self.module.hparams
        mean = " and the prior's mean skill" if hp.get("select_prior_mean") else ""
        if mean and hp.get("select_margin"):
            mean += f" (margin {float(hp.select_margin):g})"
        return f"sampled, best of {n}{mean} by Q"

    def choose(self, states: torch.Tensor) -> torch.Tensor:
        return act(self.module, states, self.mode, generator=self.gen)

    def low_level(self, states: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.module.low_level(states, z)

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return super().__call__(obs.to(self.module.device)).cpu()


class PriorPolicy(ClockedPolicy):
    """Closed-loop skill-prior rollouts: every H steps z ~ q_hat(z | s) (``sampled``) or
    z = mu_q_hat(s) (``mean``), then a = clip(f(s, z)) at every step."""

    def __init__(
        self, ckpt: str | Path | Any, num_envs: int, seed: int = 0, mode: str = "sampled"
    ) -> None:
        """``ckpt``: a skill checkpoint's path, or a ``SkillPrior`` loaded already."""
        from pourlit.skills.module import load_skill_prior

        if mode not in ("sampled", "mean"):
            raise ValueError(f"mode must be sampled or mean, got {mode!r}")
        self.skills = load_skill_prior(ckpt) if isinstance(ckpt, (str, Path)) else ckpt
        super().__init__(num_envs, self.skills.horizon, self.skills.latent_dim)
        self.mode = mode
        self.gen = torch.Generator().manual_seed(seed)

    def choose(self, states: torch.Tensor) -> torch.Tensor:
        q = self.skills.prior_dist(states)
        if self.mode == "mean":
            return q.mu
        eps = torch.randn(q.mu.shape, generator=self.gen)
        return q.mu + q.sigma * eps

    def low_level(self, states: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.skills.decode(states, z).clamp(-1.0, 1.0)
