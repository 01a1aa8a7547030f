"""One SAC update of ``SACModule`` (step 4 of its loop) over the equations of
``pourlit.rl.sac``, in the order of docs/algorithm.md section 2:

    1. temperature step  L_alpha = mean[alpha stopgrad(delta - D(s))], or plain SAC's
                         mean[-alpha stopgrad(log pi + H_target)]   (frozen in the critic warmup
                         and with ``train_policy`` false)
    2. policy loss       L_pi = mean[-min_j Q_j(s, z~pi) + alpha D(s)]  (none in the critic warmup
                         and with ``train_policy`` false: critics only)
    3. critic target     y = reward_scale r + (1 - terminated) gamma (min_j Qbar_j(s', z')
                               - alpha D(s'))
                         with z' ~ pi(.|s'), or with skill selection the best by min_j Qbar_j
                         (+ the prior mean's ``select_margin``) of z' and the candidates at s'; no gradient; Monte Carlo value
                         targets put G (``mc``) or max(y, G) (``max``) where episodes ended
    4. critic losses     L_Q = sum_j 0.5 mean (Q_j(s, z) - y)^2 over the twin critics
                         (or ``critic_ensemble`` of them; every min_j is over all of them)
    5. policy step, 6. critic steps, 7. Polyak: Qbar <- (1 - tau) Qbar + tau Q

D(s), the regulariser alpha weighs, is KL(pi(.|s) || q(.|s)) with q from ``divergence_target``
(``prior`` learned, unit, zero) or log pi(z|s) of the sampled z (``prior="none"``, plain SAC).
The functions take the module: they read its hyperparameters, networks, optimisers and
buffers, and ``sac_update`` advances its update counter.

Shapes: B = batch, d_s = state size, n_z = agent action size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pourlit.rl.acting import selection_bonus, skill_candidates
from pourlit.rl.returns import MC_KEY, mc_critic_target
from pourlit.rl.sac import (
    alpha_loss,
    critic_loss,
    critic_target,
    entropy_alpha_loss,
    policy_loss,
    polyak_update,
    prior_divergence,
    squashed_sample,
)
from pourlit.rl.select import best_by_q
from pourlit.skills.nets import DiagGaussian, unit_gaussian_like

if TYPE_CHECKING:
    from pourlit.rl.module import SACModule


def sac_update(m: SACModule) -> dict[str, torch.Tensor]:
    """One update (steps 1-7 above). Returns detached scalars: the three losses, alpha,
    q = mean Q_1(s, z), and the divergence (or, plain SAC, the entropy estimate -log pi)."""
    hp = m.hparams
    scale, width = m.space.action_scale, m.squash_width
    opt_pi, opt_q, opt_alpha = m.optimizers()
    b = sample_batch(m)
    s, z, r = b["obs"], b["z"], b["reward"]  # (B, d_s), (B, n_z), (B,)
    s2, term = b["next_obs"], b["terminated"]

    learn_policy = bool(hp.train_policy) and m.updates >= int(hp.critic_warmup_updates)
    pi = m.policy(s)
    z_pi, _, logp = squashed_sample(pi, scale, width)
    reg = regulariser(m, pi, logp, s)  # (B,)

    # 1. temperature step (frozen during the critic warmup)
    l_alpha = temperature_loss(m, reg)
    if learn_policy:
        opt_alpha.zero_grad()
        m.manual_backward(l_alpha)
        opt_alpha.optimizer.step()  # not counted in global_step (SACModule's docstring)
    alpha = m.log_alpha.detach().exp()

    # 2. policy loss (-min Q + alpha * D, or plain SAC's alpha * log pi - min Q)
    l_pi = None
    if learn_policy:
        l_pi = policy_loss(m.critic(s, z_pi), reg, alpha)

    # 3. critic target; with skill selection, at the skill the agent would execute at s'
    with torch.no_grad():
        pi2 = m.policy(s2)
        z2, _, logp2 = squashed_sample(pi2, scale, width)
        prior2 = divergence_target(m, s2) if hp.prior != "none" else None
        reg2 = regulariser(m, pi2, logp2, s2, prior2)
        if m.selecting:
            q_prior = prior2 if hp.prior == "learned" else None  # else: from the space
            cands = torch.cat([z2.unsqueeze(0), skill_candidates(m, s2, None, pi2, q_prior)])
            z2 = best_by_q(m.critic_target, s2, cands, selection_bonus(m, len(cands)))[0]
        y = critic_target(r, term, m.critic_target(s2, z2), reg2, alpha, hp.gamma, hp.reward_scale)
        if hp.value_target != "td":  # Monte Carlo returns where the episode has ended
            y = mc_critic_target(y, b[MC_KEY] * hp.reward_scale, hp.value_target)

    # 4. critic losses
    qs = m.critic(s, z)
    l_q = torch.stack([critic_loss(q, y) for q in qs]).sum()

    # 5. policy step (counted: one per update; a no-op during the critic warmup, where no
    # gradient reaches the policy), 6. critic step, 7. Polyak
    opt_pi.zero_grad()
    if l_pi is not None:
        m.manual_backward(l_pi)
    opt_pi.step()
    opt_q.zero_grad()  # drops the policy loss's gradients on the critics
    m.manual_backward(l_q)
    opt_q.optimizer.step()
    polyak_update(m.critic_target, m.critic, hp.tau)
    m.updates += 1
    out = {
        "policy_loss": (l_pi if l_pi is not None else torch.zeros(())).detach(),
        "critic_loss": l_q.detach(),
        "alpha_loss": l_alpha.detach(),
        "alpha": alpha,
        "q": qs[0].detach().mean(),
    }
    if hp.prior == "none":
        out["entropy"] = -reg.detach().mean()
    else:
        out["divergence"] = reg.detach().mean()
    return out


def sample_batch(m: SACModule) -> dict[str, torch.Tensor]:
    """``batch_size`` transitions: all from the replay buffer, or with ``demo_dir``
    round(``demo_fraction`` * batch_size) of them from the demonstrations (drawn after the
    agent's own, on the same generator)."""
    n = int(m.hparams.batch_size)
    if m.demos is None:
        return m.replay.sample(n, m._gen)
    k = int(round(float(m.hparams.demo_fraction) * n))
    own, demo = m.replay.sample(n - k, m._gen), m.demos.sample(k, m._gen)
    return {key: torch.cat([own[key], demo[key]]) for key in own}


def divergence_target(m: SACModule, states: torch.Tensor) -> DiagGaussian:
    """q(.|s) of D(s) = KL(pi(.|s) || q(.|s)) for raw states (B, d_s): the space's prior
    (``prior`` learned: q_hat; zero: the fresh residual's N(0, 0.3^2)), or N(0, I) (unit)."""
    if m.hparams.prior in ("learned", "zero"):
        return m.space.prior_dist(states)
    return unit_gaussian_like(states.new_zeros(states.shape[0], m.space.latent_dim))


def regulariser(
    m: SACModule,
    dist: DiagGaussian,
    log_prob: torch.Tensor,
    states: torch.Tensor,
    target: DiagGaussian | None = None,
) -> torch.Tensor:
    """D(s) (B,): KL(pi(.|s) || q(.|s)) (``prior_divergence``, analytic or Monte Carlo), or
    ``log_prob`` = log pi(z|s) of the sampled z for ``prior="none"``. ``target``: q at
    ``states`` when the caller has it already (else ``divergence_target``)."""
    if m.hparams.prior == "none":
        return log_prob
    target = divergence_target(m, states) if target is None else target
    return prior_divergence(dist, target, m.hparams.analytic_divergence)


def temperature_loss(m: SACModule, reg: torch.Tensor) -> torch.Tensor:
    """L_alpha for the regulariser ``reg`` (B,): the divergence budget ``target_divergence``,
    or plain SAC's target entropy ``target_entropy`` (None: -n_z)."""
    hp = m.hparams
    if hp.prior == "none":
        target = -float(m.space.latent_dim) if hp.target_entropy is None else hp.target_entropy
        return entropy_alpha_loss(m.log_alpha, reg, target)
    return alpha_loss(m.log_alpha, reg, hp.target_divergence)
