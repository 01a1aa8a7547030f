"""Choosing a skill by its value: best-of-K candidates from the policy and the learned prior.

A Gaussian prior fit to a multi-modal skill posterior covers its modes, so its samples
include good and bad skills, and its mean can fall between modes (on the pouring task the
prior's mean skill succeeds 0.07 of the time, its samples 0.6). Acting with the candidate
the critic values most (best-of-N, as in IBRL's choice between the imitation and the RL
actor) keeps the prior's good samples and drops its bad ones, and the executed behaviour
cannot fall far below the prior's while the critic ranks its samples correctly.

Shapes: K = candidates, B = states, d_s = state size, n_z = skill size.
"""

from __future__ import annotations

import torch

from pourlit.rl.sac import q_min
from pourlit.skills.nets import DiagGaussian


def squashed_samples(
    dist: DiagGaussian,
    k: int,
    scale: float,
    generator: torch.Generator | None = None,
    width: float = 1.0,
) -> torch.Tensor:
    """``k`` agent actions per state, ``z_k = scale * tanh((mu + sigma * eps_k) / width)``,
    eps_k ~ N(0, I) (drawn from ``generator``, else the global torch RNG). Parameters (B, n_z)
    -> (k, B, n_z)."""
    shape = (k, *dist.mu.shape)
    eps = torch.randn(shape, generator=generator, device=dist.mu.device, dtype=dist.mu.dtype)
    return scale * torch.tanh((dist.mu + dist.sigma * eps) / width)


def squashed_mean(dist: DiagGaussian, scale: float, width: float = 1.0) -> torch.Tensor:
    """The mean agent action ``z = scale * tanh(mu / width)``. Parameters (..., n_z) -> same."""
    return scale * torch.tanh(dist.mu / width)


def best_by_q(
    critic: torch.nn.Module,
    states: torch.Tensor,
    candidates: torch.Tensor,
    bonus: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``z*(s_b) = argmax_k [min_j Q_j(s_b, z_kb) + bonus_k]``: the candidate with the highest
    pessimistic (minimum over the critics) value, candidate k favoured by ``bonus_k`` (a margin
    a challenger must beat it by; None: no bonus).

    ``critic(states, z)`` returns (Q_1 (B,), ..., Q_n (B,)); ``states`` (B, d_s), ``candidates``
    (K, B, n_z), ``bonus`` (K,). Returns (z* (B, n_z), its value min_j Q_j (B,), bonus not
    included).
    """
    k, b, n_z = candidates.shape
    s = states.unsqueeze(0).expand(k, b, states.shape[-1]).reshape(k * b, -1)
    q = q_min(critic(s, candidates.reshape(k * b, n_z))).view(k, b)
    best = (q if bonus is None else q + bonus.to(q).view(k, 1)).argmax(dim=0)  # (B,)
    z = candidates.gather(0, best.view(1, b, 1).expand(1, b, n_z)).squeeze(0)
    return z, q.gather(0, best.view(1, b)).squeeze(0)


def candidates(
    pi: DiagGaussian,
    prior: DiagGaussian | None,
    k: int,
    scale: float,
    generator: torch.Generator | None = None,
    width: float = 1.0,
) -> torch.Tensor:
    """The candidate set C(s) of ``best_by_q``: ``k`` squashed samples of pi(.|s), then ``k``
    of the learned prior q_hat(.|s) where there is one (``prior`` None: pi's only), all from
    ``generator`` in that order. Parameters (B, n_z) -> (2k or k, B, n_z)."""
    parts = [squashed_samples(pi, k, scale, generator, width)]
    if prior is not None:
        parts.append(squashed_samples(prior, k, scale, generator, width))
    return torch.cat(parts)
