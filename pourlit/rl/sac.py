"""SPiRL's RL-stage math, one function per equation (docs/algorithm.md, section 2).

Prior-regularised SAC at the high level (HL) over skills z = m * tanh(u), u ~ pi(.|s):

    D(s)     = KL(pi(.|s) || q_hat(.|s))                       on the pre-tanh Gaussians
    y        = r * reward_scale + (1 - terminated) * gamma * (min_j Qbar_j(s', z') - alpha * D(s'))
    L_Q_j    = 0.5 * mean (Q_j(s, z) - stopgrad(y))^2
    L_pi     = mean [ -min_j Q_j(s, z~pi) + alpha * D(s) ]
    L_alpha  = mean [ alpha * stopgrad(delta - D(s)) ],        alpha = exp(log_alpha)

Plain SAC (the flat baselines) swaps D for log pi and uses the entropy temperature loss.
The transitions these act on: ``pourlit.rl.transitions``.

Shapes: B = batch, N = parallel envs, T = env steps, d_s = state size, n_z = skill size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pourlit.skills.nets import DiagGaussian

_LOG_2 = math.log(2.0)

# -- tanh-squashed Gaussian policy ------------------------------------------------------------


def squashed_log_prob(
    dist: DiagGaussian, u: torch.Tensor, scale: float = 1.0, width: float = 1.0
) -> torch.Tensor:
    """Log density of ``a = scale * tanh(u / width)`` by change of variables, summed over the
    last dim:

    ``log pi(a) = sum_i [log N(u_i; mu_i, sigma_i) - log(m / c) - 2 (log 2 - v_i - softplus(-2 v_i))]``

    with action range ``m = scale``, width ``c = width`` and ``v = u / c``, using the stable
    identity ``log(1 - tanh(v)^2) = 2 (log 2 - v - softplus(-2 v))``. SPiRL squashes with
    c = 1; c = m makes the squash the identity near 0 (slope 1), so squashed prior samples stay
    the prior's own skills wherever |z| << m.
    ``u``: (..., n) pre-tanh sample; returns (...,).
    """
    v = u / width
    log_det = math.log(scale / width) + 2.0 * (_LOG_2 - v - F.softplus(-2.0 * v))
    return (dist.log_prob(u) - log_det).sum(dim=-1)


def squashed_sample(
    dist: DiagGaussian, scale: float = 1.0, width: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reparameterised sample ``u ~ N(mu, sigma^2)``, ``a = scale * tanh(u / width)`` (SPiRL
    HL: scale = m = 2, width 1). Returns ``(a (..., n), u (..., n), log pi(a) (...,))``; see
    ``squashed_log_prob``.
    """
    u = dist.rsample()
    return scale * torch.tanh(u / width), u, squashed_log_prob(dist, u, scale, width)


# -- prior-regularised SAC ----------------------------------------------------------------------


def prior_divergence(
    policy: DiagGaussian,
    prior: DiagGaussian,
    analytic: bool = True,
    samples: int = 10,
    clamp: float = 100.0,
) -> torch.Tensor:
    """``D(s) = KL(pi(.|s) || q_hat(.|s))`` on the pre-tanh Gaussians, clamped to [-clamp, clamp].

    analytic:    ``D = sum_i KL(N(mu_i, sigma_i) || N(mu_hat_i, sigma_hat_i))``
    Monte Carlo: ``D = (1/K) sum_k sum_i [log pi(u_ki) - log q_hat(u_ki)]``, u_k ~ pi
    (reparameterised, K = ``samples``), which can be negative; the clamp bounds it both ways.

    Gradients reach both distributions; detach (or freeze) the prior yourself.
    ``policy``, ``prior``: (B, n_z) parameters; returns (B,).
    """
    if analytic:
        d = policy.kl_to(prior).sum(dim=-1)
    else:
        u = torch.stack([policy.rsample() for _ in range(samples)])  # (K, B, n_z)
        d = (policy.log_prob(u) - prior.log_prob(u)).sum(dim=-1).mean(dim=0)
    return d.clamp(-clamp, clamp)


def q_min(qs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``min_j Q_j``: the pessimistic value of the twin critics (or an ensemble's), element-wise.

    ``qs``: one (B,) tensor per critic; returns (B,)."""
    return torch.stack(tuple(qs)).min(dim=0).values


def critic_target(
    reward: torch.Tensor,
    done: torch.Tensor,
    next_qs: Sequence[torch.Tensor],
    next_divergence_or_logprob: torch.Tensor,
    alpha: torch.Tensor | float,
    gamma: float = 0.99,
    reward_scale: float = 1.0,
) -> torch.Tensor:
    """``y = r * reward_scale + (1 - done) * gamma * (min_j Qbar_j(s', z') - alpha * D(s'))``

    with ``z' ~ pi(.|s')``. ``D`` is ``prior_divergence`` for SPiRL, or ``log pi(z'|s')`` for
    plain SAC (then ``-alpha * log pi`` is the entropy bonus). gamma is applied once per
    transition (once per HL step for skills).

    ``done`` must be TERMINATION only: an episode cut by the time limit (truncation) still has
    a future, so its target bootstraps from s'. The reference code treats time limits as done;
    pourlit keeps them apart on purpose. ``alpha`` is a constant here (detached).

    ``reward``, ``done`` (bool or 0/1), ``next_divergence_or_logprob``: (B,); ``next_qs``: the
    target critics' Qbar_j(s', z'), one (B,) per critic; returns y (B,). Compute it under
    ``torch.no_grad()``; ``critic_loss`` stops its gradient anyway.
    """
    alpha = alpha.detach() if isinstance(alpha, torch.Tensor) else alpha
    next_v = q_min(next_qs) - alpha * next_divergence_or_logprob
    return reward * reward_scale + (1.0 - done.float()) * gamma * next_v


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``L_Q_j = 0.5 * mean_b (Q_j(s_b, z_b) - stopgrad(y_b))^2`` for ONE critic j.

    ``q``, ``target``: (B,); returns a scalar. Call once per critic and add.
    """
    return 0.5 * (q - target.detach()).pow(2).mean()


def policy_loss(
    qs: Sequence[torch.Tensor], divergence: torch.Tensor, alpha: torch.Tensor | float
) -> torch.Tensor:
    """``L_pi = mean_b [ -min_j Q_j(s_b, z_b) + alpha * D(s_b) ]``, z_b ~ pi(.|s_b) (rsample).

    alpha is a constant here (detached): only the policy gets this gradient.
    ``qs``: Q_j(s_b, z_b), one (B,) per critic; ``divergence``: (B,); returns a scalar.
    """
    alpha = alpha.detach() if isinstance(alpha, torch.Tensor) else alpha
    return (-q_min(qs) + alpha * divergence).mean()


def alpha_loss(
    log_alpha: torch.Tensor, divergence: torch.Tensor, target_divergence: float
) -> torch.Tensor:
    """``L_alpha = mean_b [ alpha * stopgrad(delta - D(s_b)) ]``, ``alpha = exp(log_alpha)``.

    ``dL/dlog_alpha = alpha * mean(delta - D)``: when the policy strays further from the prior
    than delta (D > delta) minimising raises alpha, otherwise lowers it. delta = 5 (kitchen,
    pouring), 1 (maze). ``log_alpha``: scalar parameter; ``divergence``: (B,); returns a scalar.
    """
    return (log_alpha.exp() * (target_divergence - divergence).detach()).mean()


def entropy_alpha_loss(
    log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float
) -> torch.Tensor:
    """Plain SAC: ``L_alpha = mean_b [ -alpha * stopgrad(log pi(a_b|s_b) + H_target) ]``.

    ``dL/dlog_alpha = -alpha * mean(log pi + H_target)``: when the entropy estimate
    ``-log pi`` is below H_target minimising raises alpha. H_target = -action_dim by default.
    ``log_alpha``: scalar parameter; ``log_prob``: (B,); returns a scalar.
    """
    return (-log_alpha.exp() * (log_prob + target_entropy).detach()).mean()


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float = 5e-3) -> None:
    """In place: ``theta_bar <- (1 - tau) * theta_bar + tau * theta`` for every parameter, and
    buffers (e.g. BatchNorm statistics) copied from ``source`` whatever tau is.

    tau = 1 copies the parameters exactly, tau = 0 keeps them. ``target`` and ``source`` must
    have the same architecture.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"polyak_update: tau must be in [0, 1], got {tau}")
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, tau)  # exact at tau = 0 and tau = 1
    for t, s in zip(target.buffers(), source.buffers(), strict=True):
        t.copy_(s)
