"""HierarchicalSACModule: SPiRL's RL stage (hierarchical SAC with the learned skill prior).

High level (HL): a tanh-Gaussian policy over skills z = action_scale * tanh(u), regularised
toward the learned prior q_hat(z | s) by D(s) = KL(pi(.|s) || q_hat(.|s)) with a temperature
alpha tuned toward ``target_divergence``. Low level: the frozen closed-loop decoder of a skill
checkpoint. Equations, defaults and update order: ../shared/design/spirl.md, section 2; the
math itself is in ``pourlit.rl.sac``.

Lightning wiring (../shared/design/architecture.md, "Lightning usage"):

- ``automatic_optimization = False``; ``SkillRolloutCallback`` (added by
  ``configure_callbacks``) steps the env before every training batch; ``training_step`` does
  at most ONE gradient update per batch.
- The training loader is endless (one integer per batch), so an epoch never ends by itself:
  bound a run with ``trainer.max_steps`` and, for epoch-based validation / checkpoints, set
  ``trainer.limit_train_batches`` (= batches per "epoch", warmup batches included).
- ``global_step`` = number of HL gradient UPDATES. Lightning 2.6 counts every
  ``LightningOptimizer.step`` call of every optimizer in manual optimisation, so only the policy
  optimizer is stepped through Lightning's wrapper; the critic and temperature optimizers are
  stepped on the wrapped torch optimizers (``opt.optimizer.step()``). Warmup batches (replay
  buffer smaller than ``warmup_transitions``) do no update and do not advance global_step, so
  ``max_steps`` counts updates only.
- Validation = ``eval_episodes`` deterministic rollouts (z = action_scale * tanh(mu)) on a
  separate env seeded with ``eval_seed``.
- Checkpoints hold the networks, optimisers, log_alpha, the replay buffer, the counters
  (env_steps, episodes, update credit) and the torch RNG states. The running skills are not
  saved: a resumed run resets its envs (seeded from ``seed`` and the episode counter).
"""

from __future__ import annotations

import contextvars
import copy
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset
from torchmetrics import MeanMetric

from pourlit.rl.policies import TanhGaussianPolicy, TwinCritic
from pourlit.rl.replay import ReplayBuffer
from pourlit.rl.rollout import SkillRolloutCallback
from pourlit.rl.sac import (
    alpha_loss,
    critic_loss,
    critic_target,
    policy_loss,
    polyak_update,
    prior_divergence,
    squashed_sample,
)
from pourlit.skills.module import load_skill_prior
from pourlit.skills.nets import DiagGaussian, unit_gaussian_like


class _Forever(IterableDataset):
    """Yields 0, 1, 2, ... forever: one item = one training batch = at most one update."""

    def __iter__(self) -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1


class _UpdateLoader(DataLoader):
    """The endless training loader. Its items carry nothing (collection and sampling state are
    the module's), so its resume state is empty; being stateful tells Lightning that resuming
    mid-"epoch" is fine."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class _Once(IterableDataset):
    def __iter__(self) -> Iterator[int]:
        yield 0


class HierarchicalSACModule(L.LightningModule):
    """Hierarchical SAC over the skills of a closed-loop skill checkpoint.

    Args:
        skill_ckpt: skill checkpoint of ``pourlit fit`` (closed loop): frozen prior + decoder.
        num_envs: environments stepped together by the rollout callback (and for evaluation).
        env: ``EnvConfig`` overrides applied on top of the checkpoint's ``env_config``.
        prior_init: start the HL policy as a copy of q_hat (PI initialisation).
        use_learned_prior: False = SSP baseline: fixed N(0, I) prior and no prior init.
        analytic_divergence: analytic KL, else Monte Carlo with 10 samples.
        target_divergence: delta of the temperature loss.
        gamma: discount per HL transition.
        tau: Polyak rate of the target critics.
        lr: Adam learning rate of policy, critics and temperature.
        batch_size: replay batch per update.
        replay_capacity: HL transitions kept.
        warmup_transitions: HL transitions collected with the prior before any update.
        updates_per_transition: gradient updates per collected HL transition.
        action_scale: m, z = m * tanh(u).
        reward_scale: multiplies the rewards in the critic target.
        seed: env reset seed and replay sampling seed.
        eval_episodes: evaluation episodes per validation.
        eval_seed: reset seed of the evaluation env.
        critic_hidden / critic_layers: size of each twin critic MLP.
        ll_squash: how decoder outputs become env actions: ``clip`` (default: clamp to
            [-1, 1], as ``pourlit evaluate``'s prior rollouts do) or ``tanh`` (spirl.md). The
            decoder is trained on raw expert actions, many saturated at +-1, and tanh shrinks
            those to 0.76: measured 2026-11-25 over the first ~10 warmup episodes of
            configs/rl/spirl_cl.yaml with the shipped prior, tanh poured 0.06 (success 0.00)
            and clip 0.64 (success 0.64).
    """

    def __init__(
        self,
        skill_ckpt: str,
        num_envs: int = 2,
        env: dict | None = None,
        prior_init: bool = True,
        use_learned_prior: bool = True,
        analytic_divergence: bool = True,
        target_divergence: float = 5.0,
        gamma: float = 0.99,
        tau: float = 5e-3,
        lr: float = 3e-4,
        batch_size: int = 256,
        replay_capacity: int = 100_000,
        warmup_transitions: int = 5000,
        updates_per_transition: float = 1.0,
        action_scale: float = 2.0,
        reward_scale: float = 1.0,
        seed: int = 0,
        eval_episodes: int = 10,
        eval_seed: int = 10_000,
        critic_hidden: int = 256,
        critic_layers: int = 2,
        ll_squash: str = "clip",
    ) -> None:
        super().__init__()
        if ll_squash not in ("tanh", "clip"):
            raise ValueError(f"ll_squash must be 'tanh' or 'clip', got {ll_squash!r}")
        if num_envs < 1 or batch_size < 1 or updates_per_transition <= 0:
            raise ValueError("num_envs, batch_size and updates_per_transition must be positive")
        self.save_hyperparameters()
        self.automatic_optimization = False
        # In a fresh contextvars context: LightningCLI instantiates this class inside a context
        # whose "given hyperparameters" the nested SkillPriorModule.save_hyperparameters would
        # otherwise take as its own.
        self.skills = contextvars.Context().run(load_skill_prior, skill_ckpt)
        d_s, n_z = self.skills.state_dim, self.skills.latent_dim
        if use_learned_prior and prior_init:
            self.policy = TanhGaussianPolicy.from_prior(self.skills, action_scale)
        else:
            hidden = self.skills.prior[0].out_features
            blocks = sum(isinstance(m, nn.BatchNorm1d) for m in self.skills.prior)
            self.policy = TanhGaussianPolicy(d_s, n_z, hidden, blocks, action_scale)
            self.policy.state_mean.copy_(self.skills.state_mean)
            self.policy.state_std.copy_(self.skills.state_std)
        self.critic = TwinCritic(d_s, n_z, critic_hidden, critic_layers)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.zeros(()))
        self.replay = self._make_replay("cpu")
        self._gen = torch.Generator().manual_seed(seed)
        self.env: Any = None  # PouringVecEnv, built in setup
        self._eval_env: Any = None
        self.env_steps = 0
        self.episodes = 0
        self.updates = 0
        self.update_credit = 0.0
        self.ep_success, self.ep_poured, self.ep_return = MeanMetric(), MeanMetric(), MeanMetric()
        self._ep_seen = 0  # episodes in the metrics above (reset every epoch)

    # -- pieces ------------------------------------------------------------------------------
    def _make_replay(self, device: torch.device | str) -> ReplayBuffer:
        d_s, n_z = self.skills.state_dim, self.skills.latent_dim
        specs = {"obs": (d_s,), "z": (n_z,), "reward": (), "next_obs": (d_s,)}
        specs |= {"terminated": (), "truncated": ()}
        return ReplayBuffer(int(self.hparams.replay_capacity), specs, device)

    @property
    def warming_up(self) -> bool:
        return len(self.replay) < max(1, int(self.hparams.warmup_transitions))

    def prior_dist(self, states: torch.Tensor) -> DiagGaussian:
        """The divergence target for raw states (B, d_s): q_hat(u | s), or N(0, I) in SSP mode."""
        if self.hparams.use_learned_prior:
            return self.skills.prior_dist(states)
        return unit_gaussian_like(states.new_zeros(states.shape[0], self.skills.latent_dim))

    def low_level(self, states: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Env actions (N, d_a) in [-1, 1] from the frozen decoder for states (N, d_s), z (N, n_z)."""
        a = self.skills.decode(states, z)
        a = torch.tanh(a) if self.hparams.ll_squash == "tanh" else a
        return a.clamp(-1.0, 1.0)

    def _env_config(self, num_envs: int) -> Any:
        from pourlit.sim.env import EnvConfig

        stored = dict(self.skills.env_config or {})
        return EnvConfig.from_dict({**stored, **(self.hparams.env or {}), "num_envs": num_envs})

    def _build_env(self) -> Any:
        from pourlit.sim.env import PouringVecEnv

        env = PouringVecEnv(self._env_config(int(self.hparams.num_envs)))
        if env.obs_dim != self.skills.state_dim or env.action_dim != self.skills.action_dim:
            env.close()
            raise ValueError(
                f"{self.hparams.skill_ckpt}: skill checkpoint has state/action sizes "
                f"{self.skills.state_dim}/{self.skills.action_dim}, the env has "
                f"{env.obs_dim}/{env.action_dim}; train the skill prior on this env's data"
            )
        return env

    def record_episodes(
        self, success: torch.Tensor, poured: torch.Tensor, returns: torch.Tensor
    ) -> None:
        """Account finished training episodes (each (E,))."""
        self.episodes += int(success.numel())
        self._ep_seen += int(success.numel())
        self.ep_success.update(success.to(self.device))
        self.ep_poured.update(poured.to(self.device))
        self.ep_return.update(returns.to(self.device))

    # -- Lightning hooks -----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Build the env (checks the checkpoint's sizes against it before any training)."""
        if stage == "fit" and self.env is None:
            self.env = self._build_env()

    def teardown(self, stage: str) -> None:
        for name in ("env", "_eval_env"):
            env = getattr(self, name)
            if env is not None:
                env.close()
                setattr(self, name, None)

    def on_fit_start(self) -> None:
        if self.replay.device != self.device:  # keep the replay buffer on the module's device
            state = self.replay.state_dict()
            self.replay = self._make_replay(self.device)
            self.replay.load_state_dict(state)

    def configure_callbacks(self) -> list[L.Callback]:
        return [SkillRolloutCallback()]

    def train_dataloader(self) -> DataLoader:
        return _UpdateLoader(_Forever(), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Once(), batch_size=None)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        lr = float(self.hparams.lr)
        return [
            torch.optim.Adam(self.policy.parameters(), lr=lr),
            torch.optim.Adam(self.critic.parameters(), lr=lr),
            torch.optim.Adam([self.log_alpha], lr=lr),
        ]

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor] | None:
        """One HL update (or none during warmup); the env was stepped by the rollout callback."""
        self._log_collection()
        if self.warming_up or self.update_credit < 1.0:
            return None
        self.update_credit -= 1.0
        out = self.update()
        self.log_dict({f"train/{k}": v for k, v in out.items()}, on_step=True, batch_size=1)
        return None

    def update(self) -> dict[str, torch.Tensor]:
        """One hierarchical SAC update in spirl.md's order: alpha step, policy loss, critic
        target (no grad), critic losses, policy step, critic steps, Polyak. Returns detached
        scalars: losses, alpha, divergence, q."""
        hp = self.hparams
        opt_pi, opt_q, opt_alpha = self.optimizers()
        b = self.replay.sample(int(hp.batch_size), self._gen)
        s, z, r = b["obs"], b["z"], b["reward"]  # (B, d_s), (B, n_z), (B,)
        s2, term = b["next_obs"], b["terminated"]

        pi = self.policy(s)
        z_pi, _, _ = squashed_sample(pi, hp.action_scale)
        div = prior_divergence(pi, self.prior_dist(s), hp.analytic_divergence)  # (B,)

        # 1. temperature step
        l_alpha = alpha_loss(self.log_alpha, div, hp.target_divergence)
        opt_alpha.zero_grad()
        self.manual_backward(l_alpha)
        opt_alpha.optimizer.step()  # not counted in global_step (see module docstring)
        alpha = self.log_alpha.detach().exp()

        # 2. policy loss
        q1_pi, q2_pi = self.critic(s, z_pi)
        l_pi = policy_loss(q1_pi, q2_pi, div, alpha)

        # 3. critic target
        with torch.no_grad():
            pi2 = self.policy(s2)
            z2, _, _ = squashed_sample(pi2, hp.action_scale)
            div2 = prior_divergence(pi2, self.prior_dist(s2), hp.analytic_divergence)
            tq1, tq2 = self.critic_target(s2, z2)
            y = critic_target(r, term, tq1, tq2, div2, alpha, hp.gamma, hp.reward_scale)

        # 4. critic losses
        q1, q2 = self.critic(s, z)
        l_q = critic_loss(q1, y) + critic_loss(q2, y)

        # 5. policy step (counted: one per update), 6. critic step, 7. Polyak
        opt_pi.zero_grad()
        self.manual_backward(l_pi)
        opt_pi.step()
        opt_q.zero_grad()  # drops the policy loss's gradients on the critics
        self.manual_backward(l_q)
        opt_q.optimizer.step()
        polyak_update(self.critic_target, self.critic, hp.tau)
        self.updates += 1
        return {
            "policy_loss": l_pi.detach(),
            "critic_loss": l_q.detach(),
            "alpha_loss": l_alpha.detach(),
            "alpha": alpha,
            "divergence": div.detach().mean(),
            "q": q1.detach().mean(),
        }

    def _log_collection(self) -> None:
        self.log("env_steps", float(self.env_steps), prog_bar=True, on_step=True, batch_size=1)
        self.log("train/episodes", float(self.episodes), on_step=True, batch_size=1)
        self.log("train/replay_size", float(len(self.replay)), on_step=True, batch_size=1)
        if self._ep_seen > 0:  # running means over this epoch's finished episodes
            self.log_dict(
                {
                    "train/success_rate": self.ep_success.compute(),
                    "train/return": self.ep_return.compute(),
                },
                prog_bar=True,
                on_step=True,
                batch_size=1,
            )
            self.log("train/poured_fraction", self.ep_poured.compute(), on_step=True, batch_size=1)

    def on_train_epoch_end(self) -> None:
        for m in (self.ep_success, self.ep_poured, self.ep_return):
            m.reset()
        self._ep_seen = 0

    # -- evaluation ---------------------------------------------------------------------------
    def act_deterministic(self, states: torch.Tensor) -> torch.Tensor:
        """Evaluation skills z = action_scale * tanh(mu(s)), (N, n_z) for states (N, d_s)."""
        return self.hparams.action_scale * torch.tanh(self.policy(states).mu)

    @torch.no_grad()
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        from pourlit.evaluate import HierarchicalPolicy, run_episodes
        from pourlit.sim.env import PouringVecEnv

        if self._eval_env is None:
            self._eval_env = PouringVecEnv(self._env_config(int(self.hparams.num_envs)))
        env = self._eval_env
        policy = HierarchicalPolicy(self, env.num_envs)
        res = run_episodes(
            env, policy, policy.begin, int(self.hparams.eval_episodes),
            int(self.hparams.eval_seed), progress=False,
        )  # fmt: skip
        self.log_dict(
            {
                "val/success_rate": res["success_rate"],
                "val/poured_fraction": res["mean_poured_fraction"],
                "val/return": res["mean_return"],
            },
            prog_bar=True,
            batch_size=1,
        )

    # -- checkpoints --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Adds the replay buffer, counters and RNG states (key ``pourlit_rl``)."""
        checkpoint["pourlit_rl"] = {
            "replay": self.replay.state_dict(),
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "updates": self.updates,
            "update_credit": self.update_credit,
            "replay_generator": self._gen.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restores what ``on_save_checkpoint`` added. The HLTransitionBuilder and running skills
        are not restored: the rollout callback resets the envs on the first batch."""
        state = checkpoint.get("pourlit_rl")
        if state is None:
            return
        self.replay.load_state_dict(state["replay"])
        self.env_steps, self.episodes = int(state["env_steps"]), int(state["episodes"])
        self.updates, self.update_credit = int(state["updates"]), float(state["update_credit"])
        self._gen.set_state(state["replay_generator"])
        torch.set_rng_state(state["torch_rng"])
