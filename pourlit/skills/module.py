"""SkillPriorModule: SPiRL skill-prior learning as a LightningModule (thin: wiring and logging).

Closed-loop SPiRL (default): encoder q(z | s, a), decoder a_t = f(s_t, z), learned prior
q_hat(z | s_0). Open-loop SPiRL (``variant="open_loop"``): encoder on actions only and an
LSTM decoder that emits the whole skill from z. Losses and defaults: docs/algorithm.md, section 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torchmetrics import MeanMetric

from pourlit.data.windows import WindowDataset
from pourlit.skills.frozen import FrozenPrior, load_module
from pourlit.skills.losses import prior_term, skill_prior_loss
from pourlit.skills.nets import (
    BlockMLP,
    ClosedLoopDecoder,
    DiagGaussian,
    OpenLoopDecoder,
    SkillEncoder,
)
from pourlit.skills.stats import adopt_data_stats, register_state_stats


class SkillPriorModule(L.LightningModule):
    """Learns a latent skill space and a state-conditioned skill prior from rollout windows.

    Args:
        state_dim: d_s (LightningCLI links it from ``data.state_dim``).
        action_dim: d_a (linked from ``data.action_dim``).
        horizon: H, steps per skill (must match the data module's).
        latent_dim: n_z.
        hidden: width of every hidden layer.
        prior_blocks: hidden [Linear-BatchNorm-LeakyReLU] blocks of the learned prior.
        decoder_blocks: hidden blocks of the closed-loop decoder.
        variant: ``closed_loop`` (ClSPiRL) or ``open_loop`` (SPiRL).
        beta: weight of the KL(q || N(0, I)) term.
        prior_loss: ``nll`` (-log q_hat(stopgrad z)) or ``kl`` (KL(stopgrad q || q_hat)).
        lr: RAdam learning rate; betas (0.9, 0.999).
        clip_grad_steps: clip the gradient norm to ``clip_grad_norm`` for this many first steps.
        clip_grad_norm: the early clipping threshold.
        state_mean / state_std: per-dimension state normalisation (None: identity); stored
            as buffers, so they travel inside the checkpoint.
        env_config: the environment config the demonstrations came from (linked from the data
            files), so that evaluation and RL rebuild the same environment.
        init_ckpt: a skill checkpoint whose weights and state normalisation this module starts
            from (its sizes must match); the data's statistics are then not adopted, so the
            decoder keeps the inputs it was trained on.
        train: ``all`` (encoder, decoder and prior: SPiRL) or ``prior``: only the prior
            network learns, on the prior loss alone, with the encoder's posteriors of the
            data's windows as targets (encoder and decoder frozen; needs ``init_ckpt``). A
            prior refit on more demonstrations than the skills were learned from.
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        horizon: int = 10,
        latent_dim: int = 10,
        hidden: int = 128,
        prior_blocks: int = 3,
        decoder_blocks: int = 3,
        variant: str = "closed_loop",
        beta: float = 5e-4,
        prior_loss: str = "nll",
        lr: float = 1e-3,
        clip_grad_steps: int = 100,
        clip_grad_norm: float = 1e-3,
        state_mean: list[float] | None = None,
        state_std: list[float] | None = None,
        env_config: dict | None = None,
        init_ckpt: str | None = None,
        train: str = "all",
    ) -> None:
        super().__init__()
        if train not in ("all", "prior"):
            raise ValueError(f"train must be 'all' or 'prior', got {train!r}")
        if train == "prior" and init_ckpt is None:
            raise ValueError(
                "train='prior' refits the prior of a trained skill model: give init_ckpt"
            )
        if variant not in ("closed_loop", "open_loop"):
            raise ValueError(f"variant must be 'closed_loop' or 'open_loop', got {variant!r}")
        if prior_loss not in ("nll", "kl"):
            raise ValueError(f"prior_loss must be 'nll' or 'kl', got {prior_loss!r}")
        if state_dim < 1 or action_dim < 1 or horizon < 1 or latent_dim < 1:
            raise ValueError("state_dim, action_dim, horizon and latent_dim must be >= 1")
        self.save_hyperparameters()
        closed = variant == "closed_loop"
        self.encoder = SkillEncoder(state_dim if closed else 0, action_dim, latent_dim, hidden)
        self.prior = BlockMLP(state_dim, 2 * latent_dim, hidden, prior_blocks)
        self.decoder: nn.Module = (
            ClosedLoopDecoder(state_dim, action_dim, latent_dim, hidden, decoder_blocks)
            if closed
            else OpenLoopDecoder(action_dim, latent_dim, horizon, hidden)
        )
        register_state_stats(self, state_dim, state_mean, state_std)
        if train == "prior":
            self.encoder.requires_grad_(False)
            self.decoder.requires_grad_(False)
        self.val_rec = MeanMetric()
        self.val_mse = MeanMetric()
        self.val_kl = MeanMetric()
        self.val_prior = MeanMetric()
        self._posteriors: torch.Tensor | None = None  # train="prior": q of every training window

    def setup(self, stage: str) -> None:
        """``fit`` with ``init_ckpt``: start from its weights. Here, not in ``__init__``: a
        resumed run's checkpoint is restored after this, and loading a finished checkpoint
        (no setup) never needs the init file."""
        if stage == "fit" and self.hparams.init_ckpt is not None and self.global_step == 0:
            self._load_init(self.hparams.init_ckpt)

    def _load_init(self, path: str) -> None:
        """Weights and state statistics of the skill checkpoint ``path`` (one-line errors)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: skill checkpoint not found (init_ckpt)")
        try:
            sd = torch.load(p, map_location="cpu", weights_only=False)["state_dict"]
            self.load_state_dict(sd)
        except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad or foreign file
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"{p}: not a skill checkpoint of these sizes ({reason})") from e
        self.hparams.state_mean = self.state_mean.tolist()
        self.hparams.state_std = self.state_std.tolist()

    # -- the model -------------------------------------------------------------------------
    @property
    def closed_loop(self) -> bool:
        return self.hparams.variant == "closed_loop"

    def normalize(self, states: torch.Tensor) -> torch.Tensor:
        return (states - self.state_mean) / self.state_std

    def prior_dist(self, states: torch.Tensor) -> DiagGaussian:
        """q_hat(z | s) for raw (unnormalised) states (..., d_s)."""
        return DiagGaussian.from_params(self.prior(self.normalize(states)))

    def decode(self, states: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Closed loop: actions (..., d_a) for raw states (..., d_s) and skills z (..., n_z)."""
        if not self.closed_loop:
            raise RuntimeError("decode(states, z) needs the closed-loop variant; use decode_open")
        return self.decoder(self.normalize(states), z)

    def _encode(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Encode one batch of windows and sample z; q, q_hat, z, the normalised states, the
        H actions and their mask."""
        h = self.hparams.horizon
        states = self.normalize(batch["states"])  # (B, H+1, d_s)
        actions = batch["actions"][:, :h]  # (B, H, d_a)
        mask = batch["pad_mask"][:, :h]  # (B, H)
        if states.shape[1] < h + 1 or actions.shape[1] != h:
            raise ValueError(
                f"batch windows must have H+1 = {h + 1} states and H = {h} actions, got "
                f"{states.shape[1]} and {batch['actions'].shape[1]} (horizon mismatch?)"
            )
        q = self.encoder(actions, states[:, :h] if self.closed_loop else None, mask)
        z = q.rsample()
        q_hat = DiagGaussian.from_params(self.prior(states[:, 0]))
        return {"q": q, "q_hat": q_hat, "z": z, "states": states, "actions": actions, "mask": mask}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Encode, sample, decode one batch of windows; returns q, q_hat, z and recon."""
        out = self._encode(batch)
        states, z = out.pop("states"), out["z"]
        if self.closed_loop:
            out["recon"] = self.decoder(states[:, : self.hparams.horizon], z[:, None, :])
        else:
            out["recon"] = self.decoder(z)
        return out

    def _losses(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
        if self.hparams.train == "prior" and self.training:
            return self._prior_losses(batch), {}
        out = self(batch)
        losses = skill_prior_loss(
            out["actions"],
            out["recon"],
            out["mask"],
            out["q"],
            out["q_hat"],
            out["z"],
            self.hparams.beta,
            self.hparams.prior_loss,
        )
        return losses, out

    def _prior_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``train="prior"``: the prior term alone, q_hat(z | s_0) fit to the frozen encoder's
        posterior of each window (no decoding, so the frozen decoder's BatchNorm statistics
        stay as they are; the encoder's weights need no gradient, so none reaches them).

        The frozen encoder's q(z | window) never changes, so it is computed once per distinct
        window at the start of training (:meth:`on_train_start`) and looked up by the batch's
        window ids; z ~ q is drawn afresh every step, as before."""
        if self._posteriors is None:
            out = self._encode(batch)
            q, q_hat = out["q"], out["q_hat"]
            z = out["z"]
        else:
            q = DiagGaussian.from_params(self._posteriors[batch["window"]])
            z = q.rsample()
            q_hat = DiagGaussian.from_params(self.prior(self.normalize(batch["states"][:, 0])))
        prior = prior_term(q_hat, q, z, self.hparams.prior_loss)
        zero = prior.new_zeros(())
        return {"loss": prior, "rec": zero, "kl": zero, "prior": prior}

    @torch.no_grad()
    def encode_all(self, dataset: WindowDataset, chunk: int = 4096) -> torch.Tensor:
        """``(W, 2 n_z)`` posterior parameters [mu, log sigma] of every window of ``dataset``,
        in id order, encoded ``chunk`` windows at a time (fixed chunks: the same numbers in a
        resumed run)."""
        h = self.hparams.horizon
        if dataset.horizon != h:
            raise ValueError(f"the data's windows have horizon {dataset.horizon}, the model {h}")
        out = []
        for first in range(0, dataset.total_windows, chunk):
            ids = np.arange(first, min(first + chunk, dataset.total_windows))
            w = dataset.windows(ids)
            states = self.normalize(w["states"][:, :h])
            q = self.encoder(
                w["actions"], states if self.closed_loop else None, w["pad_mask"][:, :h]
            )
            out.append(torch.cat([q.mu, q.log_sigma], dim=-1))
        return torch.cat(out)

    # -- Lightning hooks -------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses, _ = self._losses(batch)
        # Lightning writes step metrics every log_every_n_steps; calling self.log on the other
        # steps only costs time (~10% of a CPU step), so log exactly on the steps it writes.
        every = getattr(self._trainer, "log_every_n_steps", 1) if self._trainer else 1
        if self.global_step == 0 and getattr(self, "_skipped_files", None) is not None:
            # once per fresh run, written with the first epoch's metrics
            self.log("data/skipped_files", float(self._skipped_files), on_step=False, on_epoch=True)
        if (self.global_step + 1) % max(1, every) == 0:
            self.log_dict(
                {f"train/{k}": v.detach() for k, v in losses.items()},
                prog_bar=False,
                batch_size=batch["states"].shape[0],
            )
        return losses["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        losses, out = self._losses(batch)
        n = out["mask"].sum() * out["actions"].shape[-1]
        mse = ((out["actions"] - out["recon"]) ** 2 * out["mask"].unsqueeze(-1)).sum() / n
        b = batch["states"].shape[0]
        self.val_rec.update(losses["rec"], weight=b)
        self.val_mse.update(mse, weight=n)
        self.val_kl.update(losses["kl"], weight=b)
        self.val_prior.update(losses["prior"], weight=b)

    def on_validation_epoch_end(self) -> None:
        rec, kl, prior = self.val_rec.compute(), self.val_kl.compute(), self.val_prior.compute()
        self.log_dict(
            {
                "val/recon_mse": self.val_mse.compute(),
                "val/kl": kl,
                "val/prior_nll": prior,
                "val/loss": rec + self.hparams.beta * kl + prior,
            },
            prog_bar=True,
            sync_dist=True,
        )
        for m in (self.val_rec, self.val_mse, self.val_kl, self.val_prior):
            m.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """RAdam with the multi-tensor (``foreach``) implementation, which torch picks by default
        only for GPU tensors: the same update to float rounding, ~40% less time per step on the
        CPU than the per-parameter loop (there is no fused RAdam)."""
        params = [p for p in self.parameters() if p.requires_grad]  # train="prior": the prior's
        return torch.optim.RAdam(params, lr=self.hparams.lr, betas=(0.9, 0.999), foreach=True)

    def __setattr__(self, name: str, value: Any) -> None:
        """Lightning sets ``_current_fx_name`` before and after every hook it calls (~24 times
        a training step); ``nn.Module.__setattr__`` looks the name up among parameters,
        buffers and submodules each time. A plain string needs none of that: set it directly
        (measured: ~0.2 ms of a ~9 ms step at 2 threads, BENCHMARKS.md)."""
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """The reference clips the gradient norm to 0.001 for the first 100 steps only; after
        that the Trainer's own ``gradient_clip_val`` (if any) applies."""
        if self.global_step < self.hparams.clip_grad_steps:
            # Directly: Lightning's clip_gradients refuses a value other than the Trainer's.
            params = [p for g in optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.hparams.clip_grad_norm)
        else:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_fit_start(self) -> None:
        """Adopt the data module's normalisation statistics (saved with the checkpoint) and log
        how many bad rollout files it skipped (``data/skipped_files``)."""
        adopt_data_stats(self, copy_stats=self.hparams.init_ckpt is None)

    def on_train_start(self) -> None:
        """``train="prior"``: encode every training window once (:meth:`_prior_losses`); with
        the frozen encoder's LSTM no longer run per batch a refit step costs ~1/3 as much."""
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if self.hparams.train == "prior" and isinstance(dataset, WindowDataset):
            self._posteriors = self.encode_all(dataset)

    def on_train_end(self) -> None:
        self._posteriors = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save RNG states (z sampling) so a resumed run continues bit-for-bit, and the
        checkpoint's kind (``pourlit.checkpoints.checkpoint_kind``)."""
        checkpoint["pourlit_rng"] = {"torch": torch.get_rng_state()}
        checkpoint["pourlit_kind"] = "skill"

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("pourlit_rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])


class SkillPrior(FrozenPrior):
    """The frozen parts the RL stage needs: learned prior q_hat(z | s) and closed-loop decoder.

    Runs in eval mode (BatchNorm uses its running statistics) with gradients off.
    """

    def __init__(self, module: SkillPriorModule) -> None:
        if not module.closed_loop:
            raise ValueError("the RL stage needs a closed-loop skill checkpoint")
        super().__init__(module)
        self.horizon, self.latent_dim = int(module.hparams.horizon), int(module.hparams.latent_dim)
        self.decoder = module.decoder
        self.freeze()

    def decode(self, states: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Unsquashed actions (N, d_a) for raw states (N, d_s) and skills z (N, n_z)."""
        return self.decoder(self.normalize(states), z)


def load_skill_prior(path: str | Path, map_location: str = "cpu") -> SkillPrior:
    """Load the frozen prior and decoder from a skill checkpoint of ``pourlit fit``."""
    return SkillPrior(load_module(SkillPriorModule, path, "skill", map_location))
