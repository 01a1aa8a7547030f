"""SACModule: the RL stage, SAC with a learned prior, in skill space (SPiRL, SSP) or in the raw
action space (the flat baselines). Equations, defaults and update order: docs/algorithm.md,
sections 2-3. The loop, as Lightning runs it; the methods below appear in this order:

1. build (``__init__``, ``setup``): the space and its frozen prior (``pourlit.rl.spaces``),
   the policy (by default a copy of the prior), twin critics, temperature and replay buffer;
   in ``fit`` the training env, its sizes checked against the space's.
2. collect (``SkillRolloutCallback``): before every training batch the callback steps all
   envs, with a new agent action from ``pourlit.rl.acting.explore`` at each env's decision, until
   the module is owed an update (while warming up: until one new transition); finished
   episodes arrive through ``record_episodes``.
3. warm up (``training_step``): no update while the replay buffer holds fewer than
   ``warmup_transitions`` transitions (the rollout samples the learned prior meanwhile).
4. update (``training_step`` -> ``pourlit.rl.update.sac_update``): at most one SAC update per
   batch; the first ``critic_warmup_updates`` (all, with ``train_policy`` false) train the
   critics only.
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
- Checkpoints (``pourlit.rl.state``) hold the networks, optimisers, log_alpha, the replay
  buffer, the counters, the RNG states, the training env's full state and (in the rollout
  callback's state) the running skills: ``--ckpt_path last`` continues exactly where the run
  stopped (tested: N + resume + N updates == 2N updates).
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

from pourlit.rl import state
from pourlit.rl.acting import AgentPolicy
from pourlit.rl.buffer import ReplayBuffer
from pourlit.rl.demos import demo_replay
from pourlit.rl.loaders import update_loader, validation_loader
from pourlit.rl.options import check_options, check_replay_capacity, check_space
from pourlit.rl.policies import TwinCritic, initial_policy
from pourlit.rl.residual import ResidualSpace, load_base_agent, residual_policy
from pourlit.rl.rollout import SkillRolloutCallback
from pourlit.rl.spaces import make_env, space_from_checkpoints
from pourlit.rl.transitions import hl_replay
from pourlit.rl.update import sac_update


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
        critic_hidden / critic_layers: size of each twin critic MLP; ``critic_hidden`` is also
            the width of a fresh policy where the space has no prior to copy the shape of.
        ll_squash: skills only: how decoder outputs become env actions: ``clip`` (default:
            clamp to [-1, 1], as ``pourlit evaluate``'s prior rollouts do) or ``tanh`` (SPiRL,
            which shrinks the decoder's many saturated +-1 actions to 0.76; docs/algorithm.md
            section 2 has the measurement).
        max_env_steps: stop training once this many env steps (all envs, warmup included) were
            collected: the budget that compares methods acting at different rates (None: only
            ``trainer.max_steps``, which counts gradient updates, bounds the run).
        q_select: K > 0 turns on value-based skill selection (``pourlit.rl.select``): at every
            decision after warmup the agent draws K skills from the policy and K from the
            learned prior (policy only where there is none) and executes the one with the
            highest min_j Q_j(s, z); the critic target bootstraps from the same choice at s'
            (IBRL's target), so the critic values the policy that acts. 0 = SPiRL's plain
            sample of pi.
        select_prior_mean: skill selection also weighs the learned prior's mean skill
            m tanh(mu_q_hat(s) / c) (one more candidate, in acting and in the critic target), so
            the executed skill can be the prior's best guess wherever the critic values it
            highest. Needs ``q_select`` > 0 and a learned prior. False = the samples only.
        select_margin: with ``select_prior_mean``, how much higher (in the critics' units:
            ``reward_scale`` times return) a sample's min_j Q_j must be than the prior mean
            skill's for selection to execute it instead (``pourlit.rl.acting.selection_bonus``).
            0 = the plain argmax.
        behaviour: what the training rollouts execute (``pourlit.rl.acting.explore``):
            ``policy`` (SPiRL: samples of pi, or with selection the best candidate by Q) or
            ``prior_mean`` (the learned prior's mean skill, each decision replaced with
            probability ``behaviour_sample_prob`` by a prior sample: nearly one plan per
            episode, so the critics learn the mean skill's values from low-noise returns;
            validation and ``pourlit evaluate`` still act as ``eval_mode`` says).
        behaviour_sample_prob: p of ``prior_mean`` above.
        train_policy: False = critics only: the policy and the temperature never update (the
            policy stays its initial copy of the prior) and the agent improves only through
            skill selection by Q. True = SPiRL.
        critic_warmup_updates: the first this many updates train the critics only (policy
            and temperature frozen, so the policy stays the prior it was copied from): the
            critic learns the prior's value before the policy follows its gradient, and skill
            selection starts only after them. 0 = SPiRL.
        eval_mode: how validation episodes act: ``sampled`` (a sample of pi, with skill
            selection when ``q_select`` > 0; SPiRL's reference evaluates sampled policies),
            ``mean`` (z = action_scale * tanh(mu(s))) or ``best_mean`` (that or the learned
            prior's mean skill, whichever min_j Q_j values higher; ``pourlit.rl.acting.act``).
        squash: how the pre-tanh u becomes the agent action: ``tanh`` (SPiRL: z = m tanh(u))
            or ``prior`` (z = m tanh(u / m), slope 1 at 0, so a PI-initialised policy executes
            the prior's own skills wherever |z| << m; docs/algorithm.md section 3.1). Flat
            actions (m = 1) are the same under both.
        value_target: what the critics regress on (``pourlit.rl.returns``): ``td`` (SPiRL:
            the one-step target y of ``critic_target``), ``mc`` (the discounted Monte Carlo
            return G of the transition's own episode, scaled by ``reward_scale``, once the
            episode has ended; y while it runs) or ``max`` (max(y, G): Monte Carlo augmented
            actor-critic).
        critic_state_norm: the critics see states normalised with the prior's state
            statistics (SPiRL: raw states). Skills only.
        critic_ensemble: how many critics Q_j (SPiRL: 2, the twin critics). Every min_j (the
            policy loss, the critic target, skill selection) is over all of them: more critics
            are more pessimistic where they disagree, which is where the policy's gradient
            finds their errors (REDQ, RLPD).
        critic_layer_norm: a LayerNorm after each hidden layer of every critic (RLPD; SPiRL:
            none).
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
            rebuilds its frozen networks (weights from its own state dict) without the
            original file. Leave it None.
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
        select_prior_mean: bool = False,
        select_margin: float = 0.0,
        behaviour: str = "policy",
        behaviour_sample_prob: float = 0.15,
        train_policy: bool = True,
        critic_warmup_updates: int = 0,
        eval_mode: str = "sampled",
        squash: str = "tanh",
        value_target: str = "td",
        critic_state_norm: bool = False,
        critic_ensemble: int = 2,
        critic_layer_norm: bool = False,
        base_ckpt: str | None = None,
        residual_scale: float = 0.2,
        init_alpha: float = 1.0,
        demo_dir: str | None = None,
        demo_fraction: float = 0.5,
        demo_labels: str = "actions",
        ckpt_hparams: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_options(self.hparams)  # before any file is read
        self.automatic_optimization = False
        hp = self.hparams
        # In a fresh contextvars context: LightningCLI instantiates this class inside a context
        # whose "given hyperparameters" the prior module's save_hyperparameters (run when its
        # checkpoint loads) would otherwise take as its own.
        if base_ckpt is not None:
            base = contextvars.Context().run(load_base_agent, SACModule, base_ckpt, ckpt_hparams)
            self.space, hp.ckpt_hparams = ResidualSpace(base, residual_scale), dict(base.hparams)
        else:
            args = (skill_ckpt, action_prior_ckpt, ckpt_hparams, action_scale, ll_squash)
            self.space, hp.ckpt_hparams = contextvars.Context().run(space_from_checkpoints, *args)
        sp = self.space
        check_space(sp, prior, prior_init, select_prior_mean, behaviour)
        if base_ckpt is not None:  # starts as the base: zero residual
            self.policy = residual_policy(sp, critic_hidden)
        else:
            self.policy = initial_policy(sp, prior_init, critic_hidden)
        norm = (sp.state_mean, sp.state_std) if critic_state_norm else None
        self.critic = TwinCritic(
            sp.state_dim,
            sp.latent_dim,
            critic_hidden,
            critic_layers,
            norm,
            critic_ensemble,
            critic_layer_norm,
        )
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha)))
        returns = value_target != "td"  # Monte Carlo targets: each transition's G_t too
        self.replay = hl_replay(sp.state_dim, sp.latent_dim, int(replay_capacity), "cpu", returns)
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

    # -- 1. build ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Build the training env (checks the checkpoint's sizes against it before any
        training) and, with ``demo_dir``, the demonstrations' buffer."""
        hp = self.hparams
        if stage == "fit" and self.env is None:
            self.env = self._make_env()
            running = self.env.num_envs * (self.env.cfg.max_episode_steps // self.space.horizon + 2)
            check_replay_capacity(hp.value_target, self.replay.capacity, running)
        if stage == "fit" and hp.demo_dir is not None and self.demos is None:
            args = (self.env.cfg.reward, hp.gamma, self.space.action_scale, hp.demo_labels)
            returns = hp.value_target != "td"
            self.demos = demo_replay(hp.skill_ckpt, hp.demo_dir, *args, returns, self.replay.device)

    def _make_env(self) -> Any:
        hp = self.hparams
        source = hp.skill_ckpt or hp.action_prior_ckpt or hp.base_ckpt
        return make_env(self.space, hp.env, int(hp.num_envs), source)

    def on_fit_start(self) -> None:  # keep the buffers on the module's device
        self.replay = self.replay.to(self.device)
        if self.demos is not None:
            self.demos = self.demos.to(self.device)

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
        out = sac_update(self)
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

    # -- checkpoints and teardown (``pourlit.rl.state``) ---------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state.save_training_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state.load_training_state(self, checkpoint)

    def teardown(self, stage: str) -> None:
        state.close_envs(self)


HierarchicalSACModule = SACModule
"""The module's old name, kept only so that what recorded it still resolves: old
run folders' saved ``config.yaml`` and checkpoints written by LightningCLI (their
``_class_path``, the shipped ``checkpoints/rl/*.ckpt`` included). Use ``SACModule``."""
