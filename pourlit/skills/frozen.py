"""What the RL stage keeps of a trained prior module: frozen networks, state normalisation and
the config they were trained with (shared by ``SkillPrior`` and ``ActionPrior``)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
from torch import nn

from pourlit.skills.nets import DiagGaussian

T = TypeVar("T", bound="FrozenPrior")


class FrozenPrior(nn.Module):
    """The prior network of ``module`` (a ``BlockMLP`` on normalised states giving a diagonal
    Gaussian), its state normalisation buffers, sizes, env config and hyperparameters; always
    in eval mode (BatchNorm uses its running statistics), gradients off."""

    def __init__(self, module: L.LightningModule) -> None:
        super().__init__()
        hp = module.hparams
        self.state_dim, self.action_dim = int(hp.state_dim), int(hp.action_dim)
        self.env_config: dict | None = hp.get("env_config")
        self.hparams = dict(hp)  # rebuilds it: type(self)(ModuleClass(**hparams))
        self.prior = module.prior
        self.register_buffer("state_mean", module.state_mean.clone())
        self.register_buffer("state_std", module.state_std.clone())

    def freeze(self) -> None:
        self.eval()
        self.requires_grad_(False)

    def train(self: T, mode: bool = True) -> T:
        return super().train(False)  # always frozen

    def normalize(self, states: torch.Tensor) -> torch.Tensor:
        return (states - self.state_mean) / self.state_std

    def prior_dist(self, states: torch.Tensor) -> DiagGaussian:
        """The prior for raw states (N, d_s); parameters (N, latent)."""
        return DiagGaussian.from_params(self.prior(self.normalize(states)))


def load_module(module_cls: Any, path: str | Path, what: str, map_location: str = "cpu") -> Any:
    """``module_cls.load_from_checkpoint(path)`` with one-line errors naming the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: {what} checkpoint not found")
    try:
        return module_cls.load_from_checkpoint(p, map_location=map_location)
    except Exception as e:  # noqa: BLE001 - torch/pickle raise many kinds for a bad file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, pickle.UnpicklingError):  # not a checkpoint: torch's advice is noise
            reason = type(e).__name__
        raise ValueError(f"{p}: not a pourlit {what} checkpoint ({reason})") from e
