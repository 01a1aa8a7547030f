"""The rollout Callback of ``SACModule``: steps the vectorised env before every update.

Each env runs its own skill clock: a new agent action z at the start of every episode and
after every H executed steps (H = 1 for flat actions), from ``pourlit.rl.acting.explore``: a
squashed sample of pi(. | s), or of the learned prior q_hat(. | s) while the replay buffer
holds fewer than ``warmup_transitions`` transitions (of the initial policy where there is no
learned prior), or, once skill selection is on, the best candidate by Q (with ``behaviour``
``prior_mean``: the prior's mean skill, a prior sample with probability p); the space's low level
(the frozen decoder for skills) turns (s_t, z) into the env action at every step. Completed HL
transitions go into the module's replay buffer through ``HLTransitionBuilder``; with a
Monte Carlo ``value_target``, ``EpisodeReturns`` fills in their returns when each episode
ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from pourlit.rl.acting import explore
from pourlit.rl.returns import MC_KEY, EpisodeReturns
from pourlit.rl.transitions import HLTransitionBuilder

if TYPE_CHECKING:
    from pourlit.rl.module import SACModule


class SkillRolloutCallback(L.Callback):
    """Before each training batch, steps ``pl_module.env`` (all N envs at once) until the module
    is owed at least one gradient update: ``pl_module.update_credit >= 1`` after learning
    started (each new HL transition adds ``updates_per_transition`` credit, each update takes
    1), or at least one new HL transition during warmup.

    Collection state (current observations, skills, clocks, the transition builder) lives here
    and is checkpointed through Lightning's callback state (``state_dict``); the module saves
    the env's own state, so a resumed run continues the very episodes and skills it was in.
    Without saved state (a fresh run) the envs are reset, seeded from the module's ``seed`` and
    episode counter. The module adds this callback itself (``configure_callbacks``).
    """

    def __init__(self, max_env_steps_per_batch: int = 100_000) -> None:
        self.max_env_steps_per_batch = max_env_steps_per_batch
        self.builder: HLTransitionBuilder | None = None
        self.obs: torch.Tensor | None = None  # (N, d_s)
        self.z: torch.Tensor | None = None  # (N, n_z)
        self.clock: torch.Tensor | None = None  # (N,) steps executed by the running skill
        self.returns: EpisodeReturns | None = None  # value_target "mc" / "max" only
        self._restored = False  # load_state_dict ran; tensors still on the CPU

    def state_dict(self) -> dict[str, Any]:
        if self.obs is None or self.builder is None:
            return {}
        return {
            "obs": self.obs.cpu(),
            "z": self.z.cpu(),
            "clock": self.clock.cpu(),
            "horizon": self.builder.horizon,
            "builder": {
                k: None if v is None else v.cpu() for k, v in self.builder.state_dict().items()
            },
            "returns": None if self.returns is None else self.returns.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        self.obs, self.z, self.clock = state_dict["obs"], state_dict["z"], state_dict["clock"]
        self.builder = HLTransitionBuilder(int(state_dict["horizon"]))
        self.builder.load_state_dict(state_dict["builder"])
        if state_dict.get("returns") is not None:
            self.returns = EpisodeReturns(len(state_dict["returns"]["rows"]))
            self.returns.load_state_dict(state_dict["returns"])
        self._restored = True

    def _to_device(self, device: torch.device) -> None:
        """Restored tensors were saved from the CPU; move them next to the module."""
        assert self.obs is not None and self.z is not None and self.clock is not None
        self.obs, self.z, self.clock = self.obs.to(device), self.z.to(device), self.clock.to(device)
        if self.builder is not None:
            st = self.builder.state_dict()
            self.builder.load_state_dict(
                {k: None if v is None else v.to(device) for k, v in st.items()}
            )

    def reset(self, module: SACModule) -> None:
        """Reset the envs and start every env's skill clock afresh."""
        env = module.env
        seed = int(module.hparams.seed) * 1_000_003 + module.episodes
        self.obs = env.reset(seed=seed).to(module.device)
        n = env.num_envs
        self.z = torch.zeros(n, module.space.latent_dim, device=module.device)
        self.clock = torch.zeros(n, dtype=torch.long, device=module.device)
        self.builder = HLTransitionBuilder(module.space.horizon)
        self.returns = EpisodeReturns(n) if module.hparams.value_target != "td" else None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        module: SACModule = pl_module  # type: ignore[assignment]
        if self.obs is None:
            self.reset(module)
        elif self._restored:
            if not module.env_restored:
                raise RuntimeError(
                    "SkillRolloutCallback: the checkpoint holds running skills but no env state"
                )
            self._to_device(module.device)
            self._restored = False
        warm = module.warming_up
        added = 0
        for _ in range(self.max_env_steps_per_batch):
            if (warm and added > 0) or (not warm and module.update_credit >= 1.0):
                return
            new = self.step(module, use_prior=warm)
            added += new
            if not warm:
                module.update_credit += new * float(module.hparams.updates_per_transition)
            warm = module.warming_up
        raise RuntimeError(
            f"SkillRolloutCallback: no HL transition in {self.max_env_steps_per_batch} env steps"
        )

    @torch.no_grad()
    def step(self, module: SACModule, use_prior: bool) -> int:
        """One env step of all N envs; returns the number of HL transitions added."""
        assert self.obs is not None and self.z is not None and self.clock is not None
        assert self.builder is not None
        obs = self.obs
        decision = self.clock == 0
        if decision.any():
            self.z[decision] = explore(module, obs[decision], warmup=use_prior)
        actions = module.low_level(obs, self.z)
        next_obs, reward, term, trunc, info = module.env.step(actions)
        dev = module.device
        next_obs, reward = next_obs.to(dev), reward.to(dev)
        term, trunc = term.to(dev), trunc.to(dev)
        final = info.get("final_obs")
        out = self.builder.add_step(
            obs, self.z, decision, reward, term, trunc, None if final is None else final.to(dev)
        )
        if self.returns is not None:  # G_t arrives when the episode ends
            out[MC_KEY] = torch.full_like(out["reward"], float("nan"))
        rows = module.replay.add(out)
        ended = term | trunc
        if self.returns is not None:
            self.returns.add(self.builder.last_envs, rows)
            if ended.any():
                self.returns.finish(ended.nonzero().flatten(), module.replay, module.hparams.gamma)
        self.clock = torch.where(ended, 0, (self.clock + 1) % module.space.horizon)
        module.env_steps += module.env.num_envs
        if ended.any():
            ids = ended.nonzero().flatten().cpu()
            module.record_episodes(
                info["success"][ids].float(),
                info["poured_fraction"][ids].float(),
                info["episode_return"][ids].float(),
            )
        self.obs = next_obs
        return int(out["obs"].shape[0])
