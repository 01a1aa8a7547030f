"""SPiRL's RL-stage math, one function per equation (docs/algorithm.md, section 2).

Prior-regularised SAC at the high level (HL) over skills z = m * tanh(u), u ~ pi(.|s):

    D(s)     = KL(pi(.|s) || q_hat(.|s))                       on the pre-tanh Gaussians
    y        = r * reward_scale + (1 - terminated) * gamma * (min_j Qbar_j(s', z') - alpha * D(s'))
    L_Q_j    = 0.5 * mean (Q_j(s, z) - stopgrad(y))^2
    L_pi     = mean [ -min_j Q_j(s, z~pi) + alpha * D(s) ]
    L_alpha  = mean [ alpha * stopgrad(delta - D(s)) ],        alpha = exp(log_alpha)

Plain SAC (the flat baselines) swaps D for log pi and uses the entropy temperature loss.
``HLTransitionBuilder`` turns per-env-step rollout data into HL transitions
(s_t, z_t, R, s_next, terminated, truncated).

Shapes: B = batch, N = parallel envs, T = env steps, d_s = state size, n_z = skill size.
"""

from __future__ import annotations

import math

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


def critic_target(
    reward: torch.Tensor,
    done: torch.Tensor,
    next_q1: torch.Tensor,
    next_q2: torch.Tensor,
    next_divergence_or_logprob: torch.Tensor,
    alpha: torch.Tensor | float,
    gamma: float = 0.99,
    reward_scale: float = 1.0,
) -> torch.Tensor:
    """``y = r * reward_scale + (1 - done) * gamma * (min(Qbar_1, Qbar_2)(s', z') - alpha * D(s'))``

    with ``z' ~ pi(.|s')``. ``D`` is ``prior_divergence`` for SPiRL, or ``log pi(z'|s')`` for
    plain SAC (then ``-alpha * log pi`` is the entropy bonus). gamma is applied once per
    transition (once per HL step for skills).

    ``done`` must be TERMINATION only: an episode cut by the time limit (truncation) still has
    a future, so its target bootstraps from s'. The reference code treats time limits as done;
    pourlit keeps them apart on purpose. ``alpha`` is a constant here (detached).

    ``reward``, ``done`` (bool or 0/1), ``next_q1``, ``next_q2``, ``next_divergence_or_logprob``:
    (B,); returns y (B,). Compute it under ``torch.no_grad()``; ``critic_loss`` stops its
    gradient anyway.
    """
    alpha = alpha.detach() if isinstance(alpha, torch.Tensor) else alpha
    next_v = torch.min(next_q1, next_q2) - alpha * next_divergence_or_logprob
    return reward * reward_scale + (1.0 - done.float()) * gamma * next_v


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``L_Q_j = 0.5 * mean_b (Q_j(s_b, z_b) - stopgrad(y_b))^2`` for ONE critic j.

    ``q``, ``target``: (B,); returns a scalar. Call once per twin critic and add.
    """
    return 0.5 * (q - target.detach()).pow(2).mean()


def policy_loss(
    q1: torch.Tensor, q2: torch.Tensor, divergence: torch.Tensor, alpha: torch.Tensor | float
) -> torch.Tensor:
    """``L_pi = mean_b [ -min(Q_1, Q_2)(s_b, z_b) + alpha * D(s_b) ]``, z_b ~ pi(.|s_b) (rsample).

    alpha is a constant here (detached): only the policy gets this gradient.
    ``q1``, ``q2``, ``divergence``: (B,); returns a scalar.
    """
    alpha = alpha.detach() if isinstance(alpha, torch.Tensor) else alpha
    return (-torch.min(q1, q2) + alpha * divergence).mean()


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


# -- high-level transitions ---------------------------------------------------------------------

HL_KEYS = ("obs", "z", "reward", "next_obs", "terminated", "truncated")
"""The fields of an HL transition: what the replay buffer stores."""


class HLTransitionBuilder:
    """Turns a vectorised rollout, one env step at a time, into high-level transitions.

    Each env runs its own skill clock: the HL picks a new skill at every episode start and
    after every ``horizon`` (H) executed steps. A skill's transition is

        (obs = s_t, z = z_t, reward = sum of the rewards of its executed steps (H, or fewer
         when its episode ended), next_obs, terminated, truncated)

    where ``s_t`` is the state the skill was CHOSEN in (the reference stores s_{t+1} for all
    but the first HL step; pourlit does not). A skill that runs its H steps ends at s_{t+H},
    which arrives as ``obs`` of the next ``add_step`` (so it is emitted one call later); a
    skill cut by the end of its episode ends at that step's ``final_obs`` with that step's
    terminated / truncated flags. Skills still running are kept across calls, so keep one
    builder for the whole run; ``state_dict`` saves them (with the env's state) for a resume.
    """

    def __init__(self, horizon: int) -> None:
        if horizon < 1:
            raise ValueError(f"HLTransitionBuilder: horizon must be >= 1, got {horizon}")
        self.horizon = horizon
        self._obs: torch.Tensor | None = None  # (N, d_s) decision state of the running skill
        self._z: torch.Tensor | None = None  # (N, n_z)
        self._ret: torch.Tensor | None = None  # (N,) rewards summed so far
        self._len: torch.Tensor | None = None  # (N,) steps executed so far
        self._active: torch.Tensor | None = None  # (N,) bool, a skill is running
        # (M,) long: the env of each transition the last ``add_step`` returned, in its order
        self.last_envs = torch.zeros(0, dtype=torch.long)

    def add_step(
        self,
        obs: torch.Tensor,
        z: torch.Tensor,
        decision: torch.Tensor,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        final_obs: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Record one env step; return the HL transitions completed by it (M of them, M >= 0).

        ``obs`` (N, d_s): the state the step was taken from (s_t); ``z`` (N, n_z): the skill
        chosen at this step (read only where ``decision``); ``decision`` (N,) bool: a new skill
        starts at this step; ``reward``, ``terminated``, ``truncated`` (N,): the step's outcome;
        ``final_obs`` (N, d_s): the last state of the envs whose episode ended at this step
        (rows of other envs are ignored; may be None when none ended).

        Returns a dict keyed by ``HL_KEYS``: obs (M, d_s), z (M, n_z), reward (M,),
        next_obs (M, d_s), terminated (M,) bool, truncated (M,) bool;
        skills closed by a decision come before skills closed by an episode end.
        ``last_envs`` (M,) then names the env of each.
        """
        decision, terminated, truncated = decision.bool(), terminated.bool(), truncated.bool()
        if self._obs is None:
            n = obs.shape[0]
            self._obs, self._z = obs.new_zeros(obs.shape), z.new_zeros(z.shape)
            self._ret = reward.new_zeros(n)
            self._len = torch.zeros(n, dtype=torch.long, device=obs.device)
            self._active = torch.zeros(n, dtype=torch.bool, device=obs.device)
        assert self._z is not None and self._ret is not None
        assert self._len is not None and self._active is not None
        self._check_clock(decision)

        # 1. a skill that ran its H steps ends at the state its successor is chosen in
        close = decision & self._active
        no = torch.zeros_like(close)
        by_clock = self._transitions(close, obs, no, no)

        # 2. start the new skills at their decision state s_t
        self._obs[decision] = obs[decision]
        self._z[decision] = z[decision]
        self._ret[decision] = 0.0
        self._len[decision] = 0
        self._active |= decision

        # 3. this step's reward belongs to the running skill
        self._ret += reward
        self._len += 1

        # 4. a skill cut by the end of its episode ends at final_obs
        ended = terminated | truncated
        if ended.any() and final_obs is None:
            raise ValueError(
                f"HLTransitionBuilder.add_step: envs {_ids(ended)} ended but final_obs is None; "
                "pass the env's info['final_obs']"
            )
        by_end = self._transitions(
            ended, final_obs if final_obs is not None else obs, terminated, truncated
        )
        self._active &= ~ended
        self.last_envs = torch.cat([close.nonzero().flatten(), ended.nonzero().flatten()])
        return {k: torch.cat([by_clock[k], by_end[k]]) for k in HL_KEYS}

    _STATE = ("_obs", "_z", "_ret", "_len", "_active")

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        """The running skills (for an exact resume together with the env's state)."""
        return {
            k: None if getattr(self, k) is None else getattr(self, k).clone() for k in self._STATE
        }

    def load_state_dict(self, state: dict[str, torch.Tensor | None]) -> None:
        for k in self._STATE:
            v = state[k]
            setattr(self, k, None if v is None else v.clone())

    def _transitions(
        self,
        rows: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        assert self._obs is not None and self._z is not None and self._ret is not None
        return {
            "obs": self._obs[rows].clone(),
            "z": self._z[rows].clone(),
            "reward": self._ret[rows].clone(),
            "next_obs": next_obs[rows].clone(),
            "terminated": terminated[rows],
            "truncated": truncated[rows],
        }

    def _check_clock(self, decision: torch.Tensor) -> None:
        assert self._len is not None and self._active is not None
        idle = ~self._active & ~decision
        early = self._active & decision & (self._len < self.horizon)
        late = self._active & ~decision & (self._len >= self.horizon)
        for bad, why in (
            (idle, "have no running skill (first step or after an episode end) but no decision"),
            (early, f"chose a new skill before their skill ran its {self.horizon} steps"),
            (late, f"did not choose a new skill after {self.horizon} steps"),
        ):
            if bad.any():
                raise ValueError(f"HLTransitionBuilder.add_step: envs {_ids(bad)} {why}")


def _ids(mask: torch.Tensor) -> list[int]:
    return mask.nonzero().flatten().tolist()
