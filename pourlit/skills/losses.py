"""SPiRL's skill-learning losses, one function per equation (docs/algorithm.md, 1).

Total: ``L = L_rec + beta * L_kl + L_prior`` with the reference code's reductions.
"""

from __future__ import annotations

import torch

from pourlit.skills.nets import DiagGaussian, unit_gaussian_like


def reconstruction_loss(
    actions: torch.Tensor, recon: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Unit-variance Gaussian NLL (without its constant), masked mean over batch, step, dim:

    ``L_rec = sum_{b,t,i} m_bt * 0.5 * (a_bti - a_hat_bti)^2 / (d_a * sum_{b,t} m_bt)``

    ``actions``, ``recon``: (B, H, d_a); ``mask``: (B, H), 1 on real steps.
    """
    se = 0.5 * (actions - recon) ** 2
    denom = mask.sum().clamp(min=1.0) * actions.shape[-1]
    return (se * mask.unsqueeze(-1)).sum() / denom


def kl_loss(q: DiagGaussian) -> torch.Tensor:
    """``L_kl = mean_{b,j} KL(q_bj || N(0, 1))``: MEAN over latent dims and batch (not sum)."""
    return q.kl_to(unit_gaussian_like(q.mu)).mean()


def prior_nll_loss(q_hat: DiagGaussian, z: torch.Tensor) -> torch.Tensor:
    """``L_prior = mean_b sum_j -log q_hat(stopgrad(z)_bj | s_0)``; only q_hat gets gradients."""
    return -q_hat.log_prob(z.detach()).sum(dim=-1).mean()


def prior_kl_loss(q_hat: DiagGaussian, q: DiagGaussian) -> torch.Tensor:
    """Alternative prior loss ``mean_b sum_j KL(stopgrad(q)_bj || q_hat_bj)``."""
    return q.detach().kl_to(q_hat).sum(dim=-1).mean()


def prior_term(q_hat: DiagGaussian, q: DiagGaussian, z: torch.Tensor, kind: str) -> torch.Tensor:
    """L_prior of kind ``nll`` (``prior_nll_loss`` of the sample z) or ``kl``
    (``prior_kl_loss`` of the posterior q)."""
    return prior_nll_loss(q_hat, z) if kind == "nll" else prior_kl_loss(q_hat, q)


def skill_prior_loss(
    actions: torch.Tensor,
    recon: torch.Tensor,
    mask: torch.Tensor,
    q: DiagGaussian,
    q_hat: DiagGaussian,
    z: torch.Tensor,
    beta: float,
    prior_loss: str = "nll",
) -> dict[str, torch.Tensor]:
    """All terms and ``loss = rec + beta * kl + prior`` in a dict."""
    rec = reconstruction_loss(actions, recon, mask)
    kl = kl_loss(q)
    prior = prior_term(q_hat, q, z, prior_loss)
    return {"loss": rec + beta * kl + prior, "rec": rec, "kl": kl, "prior": prior}
