"""The flat baselines' one-step action prior p(a | s), learned from the demonstrations.

One network serves two of the paper's baselines (docs/algorithm.md, section 2):

- ``flat_prior``: flat SAC regularised toward p(a | s) by the KL-to-prior trick at the action
  level (delta = 1);
- ``bc_sac``: flat SAC whose policy starts as this network, i.e. behaviour cloning (maximum
  likelihood of the expert's actions) followed by plain SAC.

The flat RL policy acts with ``a = tanh(u)``, ``u ~ N(mu(s), sigma(s)^2)``, so the prior is a
diagonal Gaussian over the same pre-tanh ``u``: it is fitted by maximum likelihood to
``u* = atanh(clip(a, -1 + eps, 1 - eps))`` of every demonstrated step (the expert's actions are
often saturated at +-1; eps = 1e-3 maps those to +-3.8). The network is the skill prior's
``BlockMLP`` on normalised states, so ``TanhGaussianPolicy.from_prior`` copies it exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric

from pourlit.skills.frozen import FrozenPrior, load_module
from pourlit.skills.nets import BlockMLP, DiagGaussian
from pourlit.skills.stats import adopt_data_stats, register_state_stats

ATANH_EPS = 1e-3


def pre_tanh(actions: torch.Tensor, eps: float = ATANH_EPS) -> torch.Tensor:
    """``atanh(clip(a, -1 + eps, 1 - eps))``: the pre-tanh value of env actions in [-1, 1]."""
    return torch.atanh(actions.clamp(-1.0 + eps, 1.0 - eps))


class ActionPriorModule(L.LightningModule):
    """Learns p(u | s) over pre-tanh actions from rollout windows (every unpadded step).

    Args:
        state_dim / action_dim / horizon / env_config: linked from the data module by
            LightningCLI (``horizon`` only sets the window length the data module cuts).
        hidden / blocks: the ``BlockMLP`` (as the skill prior's, for policy initialisation).
        lr: Adam learning rate.
        state_mean / state_std: state normalisation (None: identity; a fresh fit adopts the
            data module's statistics), stored as buffers.
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        horizon: int = 10,
        hidden: int = 256,
        blocks: int = 3,
        lr: float = 1e-3,
        state_mean: list[float] | None = None,
        state_std: list[float] | None = None,
        env_config: dict | None = None,
    ) -> None:
        super().__init__()
        if state_dim < 1 or action_dim < 1 or horizon < 1:
            raise ValueError("state_dim, action_dim and horizon must be >= 1")
        self.save_hyperparameters()
        self.prior = BlockMLP(state_dim, 2 * action_dim, hidden, blocks)
        register_state_stats(self, state_dim, state_mean, state_std)
        self.val_nll, self.val_mse = MeanMetric(), MeanMetric()

    def prior_dist(self, states: torch.Tensor) -> DiagGaussian:
        """p(u | s) for raw states (..., d_s); parameters (..., d_a)."""
        return DiagGaussian.from_params(self.prior((states - self.state_mean) / self.state_std))

    def _steps(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The unpadded steps of a batch of windows: states (M, d_s), actions (M, d_a)."""
        actions = batch["actions"]  # (B, H, d_a)
        h = actions.shape[1]
        if actions.shape[-1] != self.hparams.action_dim:
            raise ValueError(
                f"batch actions have {actions.shape[-1]} values, the model "
                f"{self.hparams.action_dim}"
            )
        keep = batch["pad_mask"][:, :h].bool()
        return batch["states"][:, :h][keep], actions[keep]

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``nll``: mean over steps of -sum_i log N(u*_i; mu_i, sigma_i) (the loss);
        ``mse``: mean squared error of the deterministic action tanh(mu) to the expert's."""
        s, a = self._steps(batch)
        dist = self.prior_dist(s)
        nll = -dist.log_prob(pre_tanh(a)).sum(-1).mean()
        mse = (torch.tanh(dist.mu) - a).pow(2).mean()
        return {"nll": nll, "mse": mse.detach(), "n": torch.tensor(float(s.shape[0]))}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.losses(batch)
        self.log_dict(
            {"train/nll": out["nll"].detach(), "train/action_mse": out["mse"]},
            batch_size=int(out["n"]),
        )
        return out["nll"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self.losses(batch)
        self.val_nll.update(out["nll"], weight=out["n"])
        self.val_mse.update(out["mse"], weight=out["n"])

    def on_validation_epoch_end(self) -> None:
        self.log_dict(
            {"val/nll": self.val_nll.compute(), "val/action_mse": self.val_mse.compute()},
            prog_bar=True,
            sync_dist=True,
        )
        self.val_nll.reset()
        self.val_mse.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def on_fit_start(self) -> None:
        adopt_data_stats(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["pourlit_kind"] = "action_prior"  # pourlit.checkpoints.checkpoint_kind


class ActionPrior(FrozenPrior):
    """The frozen one-step action prior the flat RL baselines use (eval mode, no gradients).

    Same interface as ``pourlit.skills.SkillPrior`` where the two overlap: ``prior``,
    ``prior_dist``, ``state_mean`` / ``state_std``, ``state_dim``, ``env_config``; its latent
    is the action itself (``latent_dim = action_dim``).
    """

    def __init__(self, module: ActionPriorModule) -> None:
        super().__init__(module)
        self.latent_dim = self.action_dim
        self.freeze()


def load_action_prior(path: str | Path, map_location: str = "cpu") -> ActionPrior:
    """Load the frozen action prior from a checkpoint of ``ActionPriorModule``."""
    return ActionPrior(load_module(ActionPriorModule, path, "action-prior", map_location))


__all__ = [
    "ActionPrior",
    "ActionPriorModule",
    "load_action_prior",
    "pre_tanh",
]
