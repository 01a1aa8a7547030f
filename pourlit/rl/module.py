"""SACModule: the RL stage, SAC with a learned prior, in skill space (SPiRL, SSP) or in the raw
action space (the flat baselines). Equations, defaults and update order: docs/algorithm.md,
sections 2-3; the math is ``pourlit.rl.sac``, what the agent acts in ``pourlit.rl.spaces``.

The loop, as Lightning runs it; the methods below appear in this order:

1. build (``__init__``, ``setup``): the space and its frozen prior, the policy (by default a
   copy of the prior), twin critics, temperature and replay buffer; in ``fit`` the training
   env, its sizes checked against the space's.
2. collect (``SkillRolloutCallback``, ``act``): before every training batch the callback
   steps all envs, with a new agent action from ``act`` at each env's decision steps, until
   the module is owed an update (while warming up: until one new transition); finished
   episodes arrive through ``record_episodes``.
3. warm up (``training_step``): no update while the replay buffer holds fewer than
   ``warmup_transitions`` transitions (``act`` samples the learned prior meanwhile).
4. update (``training_step`` -> ``update``): at most one SAC update per batch; the first
   ``critic_warmup_updates`` train the critics only.
5. validate (``validation_step``): every ``trainer.limit_train_batches`` batches,
   ``eval_episodes`` episodes from seed ``eval_seed`` in a separate env.
6. stop: after ``max_env_steps`` collected env steps (``training_step`` sets
   ``should_stop``) or ``trainer.max_steps`` updates.

Lightning wiring (docs/architecture.md):

- ``automatic_optimization = False``; the loaders carry no data (``pourlit.rl.loaders``).
- ``global_step`` = number of updates. Lightning 2.6 counts every ``LightningOptimizer.step``
  call of every optimizer in manual optimisation, so only the policy optimizer is stepped
  through Lightning's wrapper; the critic and temperature optimizers are stepped on the wrapped
  torch optimizers (``opt.optimizer.step()``). Warmup batches do no update, so ``max_steps``
  counts updates only.
- Checkpoints hold the networks, optimisers, log_alpha, the replay buffer, the counters
  (env_steps, episodes, update credit), the torch RNG states, the training env's full state
  and (in the rollout callback's state) the running skills: ``--ckpt_path last`` continues
  exactly where the run stopped (tested: N + resume + N updates == 2N updates).
"""

from __future__ import annotations

import contextvars
import copy
import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric

from pourlit.rl.acting import AgentPolicy
from pourlit.rl.buffer import ReplayBuffer
from pourlit.rl.demos import check_demo_labels, demo_transitions
from pourlit.rl.loaders import update_loader, validation_loader
from pourlit.rl.policies import TwinCritic, initial_policy
from pourlit.rl.residual import ResidualSpace, residual_policy
from pourlit.rl.returns import MC_KEY, VALUE_TARGETS, mc_critic_target
from pourlit.rl.rollout import SkillRolloutCallback
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
from pourlit.rl.select import best_by_q, squashed_samples
from pourlit.rl.spaces import make_env, space_from_checkpoints
from pourlit.skills.frozen import load_module
from pourlit.skills.module import SkillPriorModule
from pourlit.skills.nets import DiagGaussian, unit_gaussian_like

PRIORS = ("learned", "unit", "none", "zero")
EVAL_MODES = ("sampled", "mean")
SQUASHES = ("tanh", "prior")


class SACModule(L.LightningModule):
    """SAC in skill space (SPiRL, SSP) or in the raw action space (the flat baselines).

    What the agent acts in (``pourlit.rl.spaces``):

    - ``skill_ckpt`` given: skills z of a closed-loop skill checkpoint, a new z every H steps,
      decoded by the frozen decoder (SPiRL, SSP);
    - otherwise flat env actions a = tanh(u), one per step (SAC, BC+SAC, flat prior), with the
      one-step action prior of ``action_prior_ckpt`` (an ``ActionPriorModule`` checkpoint)
      when one is given.

    Args:
        skill_ckpt: skill checkpoint of ``pourlit fit`` (closed loop): frozen prior + decoder.
        action_prior_ckpt: flat mode only: the action prior / BC checkpoint.
        num_envs: environments stepped together by the rollout callback (and for evaluation).
        env: ``EnvConfig`` overrides applied on top of the checkpoint's ``env_config``.
        prior: the regulariser. ``learned``: KL to the checkpoint's prior q_hat (SPiRL, flat
            prior); ``unit``: KL to the fixed N(0, I) (SSP); ``none``: plain SAC's entropy
            bonus with target entropy ``target_entropy`` (SAC, BC+SAC); ``zero`` (residual RL
            only): KL to the zero residual's N(0, 0.3^2), the fresh residual policy, so the
            residual stays near 0 where the critic knows its value.
        prior_init: start the policy as a copy of the checkpoint's prior network (SPiRL's PI
            initialisation; for the flat action prior this is the BC policy).
        analytic_divergence: analytic KL, else Monte Carlo with 10 samples.
        target_divergence: delta of the temperature loss (prior ``learned`` / ``unit``).
        target_entropy: H_target of plain SAC (None: -latent_dim, i.e. -action_dim flat).
        gamma: discount per agent transition (per skill for skills).
        tau: Polyak rate of the target critics.
        lr: Adam learning rate of policy, critics and temperature.
        policy_lr: the policy's own learning rate (None: ``lr``). Adam moves every weight by
            about the learning rate per update whatever the gradient's size, so a policy that
            follows a weak, noisy value gradient (a residual's) drifts at ``lr`` per update.
        batch_size: replay batch per update.
        replay_capacity: agent transitions kept.
        warmup_transitions: transitions collected before any update, acting with the learned
            prior if ``prior="learned"``, else with the initial policy.
        updates_per_transition: gradient updates per collected agent transition.
        action_scale: m, z = m * tanh(u) (None: 2 for skills, 1 for flat actions; flat must
            be 1).
        reward_scale: multiplies the rewards in the critic target.
        seed: env reset seed and replay sampling seed.
        eval_episodes: evaluation episodes per validation.
        eval_seed: reset seed of the validation env (20000: apart from the test seeds 10000
            that ``pourlit evaluate`` uses by default, so selecting on validation never sees them).
        critic_hidden / critic_layers: size of each twin critic MLP.
        ll_squash: skills only: how decoder outputs become env actions: ``clip`` (default:
            clamp to [-1, 1], as ``pourlit evaluate``'s prior rollouts do) or ``tanh``
            (spirl.md). The decoder is trained on raw expert actions, many saturated at +-1, and
            tanh shrinks those to 0.76: measured 2026-11-25 over the first ~10 warmup episodes
            of configs/rl/spirl_cl.yaml with the shipped prior, tanh poured 0.06 (success 0.00)
            and clip 0.64 (success 0.64).
        max_env_steps: stop training once this many env steps (all envs, warmup included) were
            collected: the budget that compares methods acting at different rates (None: only
            ``trainer.max_steps``, which counts gradient updates, bounds the run).
        q_select: K > 0 turns on value-based skill selection (``pourlit.rl.select``): at every
            decision after warmup the agent draws K skills from the policy and K from the
            learned prior (policy only where there is none) and executes the one with the
            highest min_j Q_j(s, z); the critic target bootstraps from the same choice at s'
            (IBRL's target), so the critic values the policy that acts. 0 = SPiRL's plain
            sample of pi.
        critic_warmup_updates: the first this many updates train the critics only (policy
            and temperature frozen, so the policy stays the prior it was copied from): the
            critic learns the prior's value before the policy follows its gradient, and skill
            selection starts only after them. 0 = SPiRL.
        eval_mode: how validation episodes act: ``sampled`` (a sample of pi, with skill
            selection when ``q_select`` > 0; SPiRL's reference evaluates sampled policies) or
            ``mean`` (z = action_scale * tanh(mu(s))).
        squash: how the pre-tanh u becomes the agent action: ``tanh`` (SPiRL: z = m tanh(u))
            or ``prior`` (z = m tanh(u / m), slope 1 at 0). The prior q_hat is a Gaussian over z
            itself, and m tanh(u) doubles (m = 2) every small u: a policy copied from the
            prior then executes skills twice as far from the prior's mean as the prior's own
            samples (measured on the shipped prior, 30 validation episodes: prior samples 0.60
            success, 2 tanh(prior samples) 0.43, 2 tanh(prior samples / 2) 0.67). ``prior`` keeps the
            PI-initialised policy's skills the prior's own wherever |z| << m. Flat actions
            (m = 1) are the same under both.
        value_target: what the critics regress on (``pourlit.rl.returns``): ``td`` (SPiRL:
            the one-step target y of ``critic_target``), ``mc`` (the discounted Monte Carlo
            return G of the transition's own episode, scaled by ``reward_scale``, once the
            episode has ended; y while it runs) or ``max`` (max(y, G): Monte Carlo augmented
            actor-critic).
        critic_state_norm: the critics see states normalised with the prior's state
            statistics (SPiRL: raw states). Skills only.
        base_ckpt: residual RL (``pourlit.rl.residual``): an RL checkpoint of this module whose
            agent keeps acting, frozen; this module then learns flat residual actions r that
            correct each of its env actions, a = clip(a_base + ``residual_scale`` * r, -1, 1),
            from states concat(s, a_base). ``prior`` ``none`` (plain SAC) or ``zero``,
            ``prior_init=False``; not with ``skill_ckpt`` / ``action_prior_ckpt``.
        residual_scale: eps above: how far the residual can move each env action.
        demo_dir: a folder of rollout files (the demonstrations): cut into HL transitions
            (``pourlit.rl.demos``: the skill posterior's mean as z, the env's reward summed over
            each window) that make up ``demo_fraction`` of every update batch (RLPD, Ball et al.
            2023). Skills only (``skill_ckpt``). Read in ``fit``'s setup and not stored in the
            checkpoint: a resumed run reads the same folder again. None = SPiRL.
        demo_fraction: the share of each batch drawn from the demonstrations (RLPD: 0.5).
        demo_labels: the demonstrations' actions the skill encoder reads to give each window's
            z: ``actions`` (executed) or ``expert_actions`` (DART labels, for a prior trained
            on them).
        init_alpha: the temperature alpha before the first update (SPiRL: 1, log alpha 0).
            For a plain-SAC residual (``prior="none"``) alpha 1 makes the entropy bonus
            outweigh the value of a correction and widens the residual's noise (BENCHMARKS.md
            tried 0.01).
        ckpt_hparams: filled in by the module itself: the hyperparameters of the skill / action
            prior checkpoint (for residual RL: of the base RL checkpoint), so an RL checkpoint
            rebuilds its frozen networks (weights from
            its own state dict) without the original file. Leave it None.
    """

    def __init__(
        self,
        skill_ckpt: str | None = None,
        action_prior_ckpt: str | None = None,
        num_envs: int = 2,
        env: dict | None = None,
        prior: str = "learned",
        prior_init: bool = True,
        analytic_divergence: bool = True,
        target_divergence: float = 5.0,
        target_entropy: float | None = None,
        gamma: float = 0.99,
        tau: float = 5e-3,
        lr: float = 3e-4,
        policy_lr: float | None = None,
        batch_size: int = 256,
        replay_capacity: int = 100_000,
        warmup_transitions: int = 5000,
        updates_per_transition: float = 1.0,
        action_scale: float | None = None,
        reward_scale: float = 1.0,
        seed: int = 0,
        eval_episodes: int = 10,
        eval_seed: int = 20_000,
        critic_hidden: int = 256,
        critic_layers: int = 2,
        ll_squash: str = "clip",
        max_env_steps: int | None = None,
        q_select: int = 0,
        critic_warmup_updates: int = 0,
        eval_mode: str = "sampled",
        squash: str = "tanh",
        value_target: str = "td",
        critic_state_norm: bool = False,
        base_ckpt: str | None = None,
        residual_scale: float = 0.2,
        init_alpha: float = 1.0,
        demo_dir: str | None = None,
        demo_fraction: float = 0.5,
        demo_labels: str = "actions",
        ckpt_hparams: dict | None = None,
    ) -> None:
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
        if num_envs < 1 or batch_size < 1 or updates_per_transition <= 0:
            raise ValueError("num_envs, batch_size and updates_per_transition must be positive")
        if init_alpha <= 0:
            raise ValueError(f"init_alpha must be > 0, got {init_alpha}")
        if q_select < 0 or critic_warmup_updates < 0:
            raise ValueError("q_select and critic_warmup_updates must be >= 0")
        if squash not in SQUASHES:
            raise ValueError(f"squash must be one of {SQUASHES}, got {squash!r}")
        if value_target not in VALUE_TARGETS:
            raise ValueError(f"value_target must be one of {VALUE_TARGETS}, got {value_target!r}")
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {eval_mode!r}")
        if skill_ckpt is not None and action_prior_ckpt is not None:
            raise ValueError("give skill_ckpt (skill space) or action_prior_ckpt (flat), not both")
        if base_ckpt is not None and (
            skill_ckpt or action_prior_ckpt or prior not in ("none", "zero") or prior_init
        ):
            raise ValueError(
                "base_ckpt (residual RL) is SAC on flat residuals: no skill_ckpt or "
                f"action_prior_ckpt, prior none or zero, prior_init false (got prior={prior!r}, "
                f"prior_init={prior_init})"
            )
        if demo_dir is not None and skill_ckpt is None:
            raise ValueError("demo_dir (demonstration transitions) needs a skill_ckpt")
        check_demo_labels(demo_labels)  # before any file is read
        if not 0.0 < demo_fraction < 1.0:
            raise ValueError(f"demo_fraction must be in (0, 1), got {demo_fraction}")
        if prior == "zero" and base_ckpt is None:
            raise ValueError("prior='zero' (KL to the zero residual) needs base_ckpt")
        if skill_ckpt is None and action_scale not in (None, 1.0):
            raise ValueError(
                f"flat actions are tanh(u) in [-1, 1]: action_scale must be 1, got {action_scale}"
            )
        self.save_hyperparameters()
        self.automatic_optimization = False
        hp = self.hparams
        # In a fresh contextvars context: LightningCLI instantiates this class inside a context
        # whose "given hyperparameters" the prior module's save_hyperparameters (run when its
        # checkpoint loads) would otherwise take as its own.
        if base_ckpt is not None:
            base = contextvars.Context().run(_base_agent, base_ckpt, ckpt_hparams)
            self.space, hp.ckpt_hparams = ResidualSpace(base, residual_scale), dict(base.hparams)
        else:
            args = (skill_ckpt, action_prior_ckpt, ckpt_hparams, action_scale, ll_squash)
            self.space, hp.ckpt_hparams = contextvars.Context().run(space_from_checkpoints, *args)
        sp = self.space
        if sp.prior is None and (prior == "learned" or prior_init):
            raise ValueError(
                f"prior={prior!r}, prior_init={prior_init}: needs a learned prior, but no "
                "skill_ckpt or action_prior_ckpt is given (plain SAC: prior none, prior_init false)"
            )
        if base_ckpt is not None:  # starts as the base: zero residual
            self.policy = residual_policy(sp, critic_hidden)
        else:
            self.policy = initial_policy(sp, prior_init, critic_hidden)
        norm = (sp.state_mean, sp.state_std) if critic_state_norm else None
        self.critic = TwinCritic(sp.state_dim, sp.latent_dim, critic_hidden, critic_layers, norm)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha)))
        self.replay = self._make_replay("cpu")
        self.demos: ReplayBuffer | None = None  # demo_dir's HL transitions, built in setup
        self._gen = torch.Generator().manual_seed(seed)  # replay sampling
        self.env: Any = None  # PouringVecEnv, built in setup
        self._eval_env: Any = None
        self.env_steps = 0
        self.episodes = 0
        self.updates = 0
        self.update_credit = 0.0
        self.ep_success, self.ep_poured, self.ep_return = MeanMetric(), MeanMetric(), MeanMetric()
        self._ep_seen = 0  # episodes in the metrics above (reset every epoch)
        self.env_restored = False  # on_load_checkpoint put the training env mid-episode
        self._env_snapshot: dict[str, Any] | None = None  # env state at teardown

    def _make_replay(self, device: torch.device | str, capacity: int | None = None) -> ReplayBuffer:
        """Room for ``capacity`` (default ``replay_capacity``) HL transitions
        (``pourlit.rl.sac.HL_KEYS``)."""
        d_s, n_z = self.space.state_dim, self.space.latent_dim
        specs = {"obs": (d_s,), "z": (n_z,), "reward": (), "next_obs": (d_s,)}
        specs |= {"terminated": (), "truncated": ()}
        if self.hparams.value_target != "td":
            specs[MC_KEY] = ()  # G_t of the transition's episode, NaN until it ends
        size = int(self.hparams.replay_capacity) if capacity is None else capacity
        return ReplayBuffer(size, specs, device)

    # -- 1. build ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Build the training env (checks the checkpoint's sizes against it before any
        training)."""
        if stage == "fit" and self.env is None:
            self.env = self._make_env()
            running = self.env.num_envs * (self.env.cfg.max_episode_steps // self.space.horizon + 2)
            if self.hparams.value_target != "td" and self.replay.capacity < running:
                raise ValueError(
                    f"value_target={self.hparams.value_target!r} needs the replay buffer to hold "
                    f"every running episode: replay_capacity must be >= {running}, got "
                    f"{self.replay.capacity}"
                )
        if stage == "fit" and self.hparams.demo_dir is not None and self.demos is None:
            self.demos = self._load_demos()

    def _load_demos(self) -> ReplayBuffer:
        """The HL transitions of ``demo_dir`` in a buffer of their own (``pourlit.rl.demos``)."""
        hp = self.hparams
        load = contextvars.Context().run
        skills = load(load_module, SkillPriorModule, hp.skill_ckpt, "skill").eval()
        reward = self.env.cfg.reward
        scale = self.space.action_scale
        rows = demo_transitions(hp.demo_dir, skills, reward, hp.gamma, scale, hp.demo_labels)
        if hp.value_target == "td":
            rows.pop(MC_KEY)
        buf = self._make_replay(self.replay.device, len(rows["obs"]))
        buf.add(rows)
        return buf

    def _make_env(self) -> Any:
        hp = self.hparams
        source = hp.skill_ckpt or hp.action_prior_ckpt or hp.base_ckpt
        return make_env(self.space, hp.env, int(hp.num_envs), source)

    def on_fit_start(self) -> None:
        if self.replay.device != self.device:  # keep the replay buffer on the module's device
            state = self.replay.state_dict()
            self.replay = self._make_replay(self.device)
            self.replay.load_state_dict(state)
        if self.demos is not None and self.demos.device != self.device:
            state = self.demos.state_dict()
            self.demos = self._make_replay(self.device, self.demos.capacity)
            self.demos.load_state_dict(state)

    def configure_callbacks(self) -> list[L.Callback]:
        return [SkillRolloutCallback()]

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        lr = float(self.hparams.lr)
        pi_lr = lr if self.hparams.policy_lr is None else float(self.hparams.policy_lr)
        return [
            torch.optim.Adam(self.policy.parameters(), lr=pi_lr),
            torch.optim.Adam(self.critic.parameters(), lr=lr),
            torch.optim.Adam([self.log_alpha], lr=lr),
        ]

    def train_dataloader(self) -> DataLoader:
        return update_loader()

    def val_dataloader(self) -> DataLoader:
        return validation_loader()

    # -- 2. collect (called by the rollout callback) -------------------------------------------
    @property
    def warming_up(self) -> bool:
        return len(self.replay) < max(1, int(self.hparams.warmup_transitions))

    @property
    def selecting(self) -> bool:
        """Skill selection by value is on (``q_select`` > 0) and the critic has had its warmup."""
        hp = self.hparams
        return int(hp.q_select) > 0 and self.updates >= max(1, int(hp.critic_warmup_updates))

    @property
    def squash_width(self) -> float:
        """c of z = m tanh(u / c): 1 for SPiRL's squash, m for ``squash="prior"``."""
        return self.space.action_scale if self.hparams.squash == "prior" else 1.0

    @torch.no_grad()
    def act(
        self,
        states: torch.Tensor,
        mode: str = "sampled",
        warmup: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Agent actions z (N, n_z) for raw states (N, d_s), as the agent executes them.

        ``mean``: z = m tanh(mu_pi(s)). ``sampled``: z = m tanh(u), u ~ ``behaviour_dist``
        (the prior during warmup); once ``selecting``, the best of ``skill_candidates`` by
        min_j Q_j(s, z). Noise comes from ``generator`` (else the global torch RNG, which
        training checkpoints, so a resumed run draws the same skills).
        """
        scale, w = self.space.action_scale, self.squash_width
        if mode == "mean":
            return scale * torch.tanh(self.policy(states).mu / w)
        if not warmup and self.selecting:  # (no update, no selection: warmup acts unselected)
            return best_by_q(self.critic, states, self.skill_candidates(states, generator))[0]
        return squashed_samples(self.behaviour_dist(states, warmup), 1, scale, generator, w)[0]

    def behaviour_dist(self, states: torch.Tensor, warmup: bool) -> DiagGaussian:
        """The distribution over pre-tanh agent actions the rollout samples from: during warmup
        the learned prior where there is one (``prior="learned"``), else the policy."""
        if warmup and self.hparams.prior == "learned":
            return self.space.prior_dist(states)
        return self.policy(states)

    def skill_candidates(
        self,
        states: torch.Tensor,
        generator: torch.Generator | None = None,
        pi: DiagGaussian | None = None,
        prior: DiagGaussian | None = None,
    ) -> torch.Tensor:
        """(2K, B, n_z): K squashed samples of pi(.|s) then K of the learned prior (K of pi
        only where there is no learned prior), K = ``q_select``. ``pi`` / ``prior``: the two
        distributions at ``states`` when the caller has them already."""
        k, scale, w = int(self.hparams.q_select), self.space.action_scale, self.squash_width
        pi = self.policy(states) if pi is None else pi
        parts = [squashed_samples(pi, k, scale, generator, w)]
        if self.space.prior is not None:
            prior = self.space.prior_dist(states) if prior is None else prior
            parts.append(squashed_samples(prior, k, scale, generator, w))
        return torch.cat(parts)

    def low_level(self, states: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Env actions (N, d_a) in [-1, 1] for states (N, d_s) and agent actions z (N, n_z)."""
        return self.space.low_level(states, z)

    def record_episodes(
        self, success: torch.Tensor, poured: torch.Tensor, returns: torch.Tensor
    ) -> None:
        """Account finished training episodes (each (E,))."""
        self.episodes += int(success.numel())
        self._ep_seen += int(success.numel())
        self.ep_success.update(success.to(self.device))
        self.ep_poured.update(poured.to(self.device))
        self.ep_return.update(returns.to(self.device))

    # -- 3.-6. the loop body -------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One pass of the loop; the rollout callback has just collected (2)."""
        self._log_collection()
        budget = self.hparams.max_env_steps
        if budget is not None and self.env_steps >= budget:  # 6. stop
            self.trainer.should_stop = True  # Lightning ends fit after this batch
        if self.warming_up or self.update_credit < 1.0:  # 3. warm up (or no update owed)
            return
        self.update_credit -= 1.0  # 4. update
        out = self.update()
        self.log_dict({f"train/{k}": v for k, v in out.items()}, on_step=True, batch_size=1)
        # 5. validation: Lightning calls validation_step every limit_train_batches batches

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

    # -- 4. update -----------------------------------------------------------------------------
    def update(self) -> dict[str, torch.Tensor]:
        """One SAC update in spirl.md's order: alpha step, policy loss, critic target (no
        grad), critic losses, policy step, critic steps, Polyak. With ``prior="none"`` the
        regulariser is log pi (plain SAC, entropy temperature loss), else the divergence to
        the prior. Returns detached scalars: losses, alpha, divergence (or entropy), q."""
        hp = self.hparams
        scale = self.space.action_scale
        opt_pi, opt_q, opt_alpha = self.optimizers()
        b = self.sample_batch()
        s, z, r = b["obs"], b["z"], b["reward"]  # (B, d_s), (B, n_z), (B,)
        s2, term = b["next_obs"], b["terminated"]

        learn_policy = self.updates >= int(hp.critic_warmup_updates)
        pi = self.policy(s)
        z_pi, _, logp = squashed_sample(pi, scale, self.squash_width)
        reg = self.regulariser(pi, logp, s)  # (B,)

        # 1. temperature step (frozen during the critic warmup)
        l_alpha = self.temperature_loss(reg)
        if learn_policy:
            opt_alpha.zero_grad()
            self.manual_backward(l_alpha)
            opt_alpha.optimizer.step()  # not counted in global_step (see module docstring)
        alpha = self.log_alpha.detach().exp()

        # 2. policy loss (-min Q + alpha * D, or plain SAC's alpha * log pi - min Q)
        l_pi = None
        if learn_policy:
            q1_pi, q2_pi = self.critic(s, z_pi)
            l_pi = policy_loss(q1_pi, q2_pi, reg, alpha)

        # 3. critic target; with skill selection, at the skill the agent would execute at s'
        with torch.no_grad():
            pi2 = self.policy(s2)
            z2, _, logp2 = squashed_sample(pi2, scale, self.squash_width)
            prior2 = self.prior_dist(s2) if hp.prior != "none" else None
            reg2 = self.regulariser(pi2, logp2, s2, prior2)
            if self.selecting:  # bootstrap from the skill the agent would execute at s'
                q_prior = prior2 if hp.prior == "learned" else None  # else: from the space
                cands = torch.cat([z2.unsqueeze(0), self.skill_candidates(s2, None, pi2, q_prior)])
                z2 = best_by_q(self.critic_target, s2, cands)[0]
            tq1, tq2 = self.critic_target(s2, z2)
            y = critic_target(r, term, tq1, tq2, reg2, alpha, hp.gamma, hp.reward_scale)
            if hp.value_target != "td":  # Monte Carlo returns where the episode has ended
                y = mc_critic_target(y, b[MC_KEY] * hp.reward_scale, hp.value_target)

        # 4. critic losses
        q1, q2 = self.critic(s, z)
        l_q = critic_loss(q1, y) + critic_loss(q2, y)

        # 5. policy step (counted: one per update; a no-op during the critic warmup, where no
        # gradient reaches the policy), 6. critic step, 7. Polyak
        opt_pi.zero_grad()
        if l_pi is not None:
            self.manual_backward(l_pi)
        opt_pi.step()
        opt_q.zero_grad()  # drops the policy loss's gradients on the critics
        self.manual_backward(l_q)
        opt_q.optimizer.step()
        polyak_update(self.critic_target, self.critic, hp.tau)
        self.updates += 1
        out = {
            "policy_loss": (l_pi if l_pi is not None else torch.zeros(())).detach(),
            "critic_loss": l_q.detach(),
            "alpha_loss": l_alpha.detach(),
            "alpha": alpha,
            "q": q1.detach().mean(),
        }
        if hp.prior == "none":
            out["entropy"] = -reg.detach().mean()
        else:
            out["divergence"] = reg.detach().mean()
        return out

    def sample_batch(self) -> dict[str, torch.Tensor]:
        """``batch_size`` transitions: all from the replay buffer, or with ``demo_dir``
        round(``demo_fraction`` * batch_size) of them from the demonstrations (drawn after the
        agent's own, on the same generator)."""
        n = int(self.hparams.batch_size)
        if self.demos is None:
            return self.replay.sample(n, self._gen)
        k = int(round(float(self.hparams.demo_fraction) * n))
        own, demo = self.replay.sample(n - k, self._gen), self.demos.sample(k, self._gen)
        return {key: torch.cat([own[key], demo[key]]) for key in own}

    def prior_dist(self, states: torch.Tensor) -> DiagGaussian:
        """The divergence target for raw states (B, d_s): the learned prior, or N(0, I) for
        ``prior="unit"``."""
        if self.hparams.prior in ("learned", "zero"):
            return self.space.prior_dist(states)
        return unit_gaussian_like(states.new_zeros(states.shape[0], self.space.latent_dim))

    def regulariser(
        self,
        dist: DiagGaussian,
        log_prob: torch.Tensor,
        states: torch.Tensor,
        prior: DiagGaussian | None = None,
    ) -> torch.Tensor:
        """Per-state (B,) term that alpha weighs: D(s) = KL(pi || prior) for ``prior`` learned /
        unit, or log pi(a | s) of the sampled action for ``prior="none"`` (plain SAC).
        ``prior``: ``prior_dist(states)`` when the caller has it already."""
        hp = self.hparams
        if hp.prior == "none":
            return log_prob
        prior = self.prior_dist(states) if prior is None else prior
        return prior_divergence(dist, prior, hp.analytic_divergence)

    def temperature_loss(self, reg: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        if hp.prior == "none":
            target = (
                -float(self.space.latent_dim) if hp.target_entropy is None else hp.target_entropy
            )
            return entropy_alpha_loss(self.log_alpha, reg, target)
        return alpha_loss(self.log_alpha, reg, hp.target_divergence)

    # -- 5. validate ---------------------------------------------------------------------------
    @torch.no_grad()
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        from pourlit.sim.episodes import run_episodes

        hp = self.hparams
        if self._eval_env is None:
            self._eval_env = self._make_env()
        env = self._eval_env
        # its own generator: validation draws no global randomness, so resume stays exact
        policy = AgentPolicy(self, env.num_envs, str(hp.eval_mode), int(hp.eval_seed))
        res = run_episodes(
            env, policy, policy.begin, int(hp.eval_episodes), int(hp.eval_seed), progress=False
        )
        self.log_dict(
            {
                "val/success_rate": res["success_rate"],
                "val/poured_fraction": res["mean_poured_fraction"],
                "val/return": res["mean_return"],
                "val/env_steps": float(self.env_steps),  # x axis of the learning curves
            },
            prog_bar=True,
            batch_size=1,
        )

    # -- checkpoints and teardown --------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Adds the replay buffer, counters, RNG states and the training env's state (key
        ``pourlit_rl``); the rollout callback saves its running skills itself."""
        checkpoint["pourlit_kind"] = "rl"  # pourlit.checkpoints.checkpoint_kind
        checkpoint["pourlit_rl"] = {
            "replay": self.replay.state_dict(),
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "updates": self.updates,
            "update_credit": self.update_credit,
            "replay_generator": self._gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "env": self._env_state(),
        }

    def _env_state(self) -> dict[str, Any] | None:
        if self.env is not None and self.env._obs is not None:
            return self.env.state_dict()
        return self._env_snapshot  # after teardown (None before any training)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restores what ``on_save_checkpoint`` added. In ``fit`` the env already exists (built
        in ``setup``, which Lightning runs before restoring), so it continues mid-episode."""
        state = checkpoint.get("pourlit_rl")
        if state is None:
            return
        self.env_steps, self.episodes = int(state["env_steps"]), int(state["episodes"])
        self.updates = int(state["updates"])
        if "replay" not in state:  # an exported (inference) copy keeps only the counters
            return
        self.replay.load_state_dict(state["replay"])
        self.update_credit = float(state["update_credit"])
        self._gen.set_state(state["replay_generator"])
        torch.set_rng_state(state["torch_rng"])
        if self.env is not None and state.get("env") is not None:
            self.env.load_state_dict(state["env"])
            self.env_restored = True

    def teardown(self, stage: str) -> None:
        """Close the envs; the training env's state is kept for a checkpoint saved after
        ``fit`` returns (``trainer.save_checkpoint``), so that one resumes exactly too."""
        if self.env is not None and self.env._obs is not None:
            self._env_snapshot = self.env.state_dict()
        for name in ("env", "_eval_env"):
            env = getattr(self, name)
            if env is not None:
                env.close()
                setattr(self, name, None)


def _base_agent(path: str, hparams: dict | None) -> SACModule:
    """The frozen base agent of residual RL: rebuilt from ``hparams`` (a residual checkpoint
    holds its weights) or loaded from the RL checkpoint ``path``."""
    if hparams is not None:
        return SACModule(**hparams)
    return load_module(SACModule, path, "RL")


HierarchicalSACModule = SACModule
"""The module's old name, kept only so that what recorded it still resolves: old
run folders' saved ``config.yaml`` and checkpoints written by LightningCLI (their
``_class_path``, the shipped ``checkpoints/rl/*.ckpt`` included). Use ``SACModule``."""
