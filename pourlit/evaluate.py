"""``pourlit evaluate``: roll a policy out in the simulator on held-out seeds, report metrics.

Policies: a skill checkpoint ("prior rollouts": every H steps draw z from the learned prior
q_hat(z | s_t) and run the closed-loop decoder), or the scripted expert (``--policy expert``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pourlit.sim.env import EnvConfig, PouringVecEnv


@dataclass
class EpisodeStats:
    success: list[bool] = field(default_factory=list)
    poured: list[float] = field(default_factory=list)
    spilled: list[float] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            "episodes": len(self.success),
            "success_rate": float(np.mean(self.success)),
            "mean_poured_fraction": float(np.mean(self.poured)),
            "mean_spilled_fraction": float(np.mean(self.spilled)),
            "mean_return": float(np.mean(self.returns)),
            "episode_length": float(np.mean(self.lengths)),
        }


class PriorPolicy:
    """Closed-loop skill-prior rollouts: z ~ q_hat(z | s) every H steps, a = clip(f(s, z))."""

    def __init__(self, ckpt: str | Path, num_envs: int, seed: int = 0) -> None:
        from pourlit.skills.module import load_skill_prior

        self.skills = load_skill_prior(ckpt)
        self.clock = np.zeros(num_envs, dtype=np.int64)
        self.z = torch.zeros(num_envs, self.skills.latent_dim)
        self.gen = torch.Generator().manual_seed(seed)

    def begin(self, ids: np.ndarray) -> None:
        self.clock[ids] = 0

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        new = np.flatnonzero(self.clock % self.skills.horizon == 0)
        if len(new):
            q = self.skills.prior_dist(obs[new])
            eps = torch.randn(q.mu.shape, generator=self.gen)
            self.z[new] = q.mu + q.sigma * eps
        self.clock += 1
        return self.skills.decode(obs, self.z).clamp(-1.0, 1.0)


class HierarchicalPolicy:
    """A (hierarchical) SAC module acting: every H steps of each env's own skill clock a new
    agent action from ``module.act`` in ``mode`` (``sampled``: a sample of pi, or with skill
    selection the best candidate by Q; ``mean``: z = action_scale * tanh(mu(s))), then the
    frozen low level (decoder) at every step. Used by the module's validation and by
    ``pourlit evaluate`` on RL checkpoints."""

    def __init__(self, module: Any, num_envs: int, mode: str = "sampled", seed: int = 0) -> None:
        self.module = module
        self.mode = mode
        self.gen = torch.Generator(device=module.device).manual_seed(seed)
        self.horizon = module.space.horizon
        self.clock = np.zeros(num_envs, dtype=np.int64)
        self.z = torch.zeros(num_envs, module.space.latent_dim, device=module.device)

    @classmethod
    def from_checkpoint(
        cls, ckpt: str | Path, num_envs: int, mode: str = "sampled", seed: int = 0
    ) -> HierarchicalPolicy:
        import contextvars

        from pourlit.rl.module import HierarchicalSACModule

        load = HierarchicalSACModule.load_from_checkpoint
        module = contextvars.Context().run(load, ckpt, map_location="cpu").eval()
        return cls(module, num_envs, mode, seed)

    @property
    def name(self) -> str:
        """How it acts, e.g. ``sampled, best of 8 by Q`` or ``mean skill``."""
        if self.mode == "mean":
            return "mean skill"
        k = int(self.module.hparams.q_select)
        if k == 0 or not self.module.selecting:  # selection off, or before the critic warmup ended
            return "sampled"
        n = 2 * k if self.module.space.prior is not None else k
        return f"sampled, best of {n} by Q"

    def begin(self, ids: np.ndarray) -> None:
        self.clock[ids] = 0

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.to(self.module.device)
        new = np.flatnonzero(self.clock % self.horizon == 0)
        if len(new):
            self.z[new] = self.module.act(obs[new], self.mode, generator=self.gen)
        self.clock += 1
        return self.module.low_level(obs, self.z).cpu()


class BCPolicy:
    """An action-prior (behaviour-cloning) checkpoint acting deterministically: a = tanh(mu(s))."""

    def __init__(self, ckpt: str | Path) -> None:
        from pourlit.skills.action_prior import load_action_prior

        self.prior = load_action_prior(ckpt)
        self.skills = self.prior  # state_dim / action_dim / env_config, as PriorPolicy's

    def begin(self, ids: np.ndarray) -> None:
        pass

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.prior.prior_dist(obs).mu)


def checkpoint_kind(ckpt: str | Path) -> str:
    """``rl`` for a (hierarchical) SAC checkpoint, ``skill`` for a skill-prior one,
    ``action_prior`` for a flat action-prior / BC one: the ``pourlit_kind`` that every
    checkpoint pourlit writes records, or, for checkpoints from before 2026-12-02 (the shipped
    skill and action priors), what their hyperparameter names say."""
    p = Path(ckpt)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: checkpoint not found")
    try:
        ckpt_dict = torch.load(p, map_location="cpu", weights_only=False)
        hp = ckpt_dict.get("hyper_parameters", {})
    except Exception as e:  # noqa: BLE001 - torch/pickle raise many kinds for a bad file
        raise ValueError(f"{p}: not a pourlit checkpoint ({type(e).__name__})") from e
    if ckpt_dict.get("pourlit_kind") in ("rl", "skill", "action_prior"):
        return ckpt_dict["pourlit_kind"]
    if "skill_ckpt" in hp:
        return "rl"
    if "variant" in hp:
        return "skill"
    if "blocks" in hp:
        return "action_prior"
    raise ValueError(f"{p}: not a pourlit checkpoint (unknown hyperparameters {sorted(hp)[:6]})")


class ExpertPolicy:
    """The scripted expert (privileged), for reference numbers."""

    def __init__(self, env: PouringVecEnv, seed: int = 0) -> None:
        from pourlit.expert.pour import ScriptedPourExpert

        self.expert = ScriptedPourExpert(env, seed=seed)
        self.expert.begin()

    def begin(self, ids: np.ndarray) -> None:
        self.expert.begin(ids)

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.expert.act(), dtype=torch.float32)


def run_episodes(
    env: PouringVecEnv,
    policy: Callable[[torch.Tensor], torch.Tensor],
    begin: Callable[[np.ndarray], None],
    episodes: int,
    seed: int,
    video: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Run ``episodes`` episodes (the first ``episodes`` to finish, from seeded resets)."""
    stats = EpisodeStats()
    obs = env.reset(seed=seed)
    begin(np.arange(env.num_envs))
    frames: list[np.ndarray] = []
    renderer = None
    if video is not None:
        from pourlit.sim.render import Renderer

        renderer = Renderer(env.model, 240, 320, "front")
    start, steps = time.perf_counter(), 0
    bar = tqdm(total=episodes, desc="evaluate", unit="ep", disable=not progress)
    try:
        while len(stats.success) < episodes:
            if renderer is not None:
                frames.append(renderer.frame(env.mj_data(0)))
            obs, reward, term, trunc, info = env.step(policy(obs))
            steps += env.num_envs
            ended = np.flatnonzero((term | trunc).numpy())
            for i in ended:
                if len(stats.success) >= episodes:
                    break
                stats.success.append(bool(info["success"][i]))
                stats.poured.append(float(info["poured_fraction"][i]))
                stats.spilled.append(float(info["spilled_fraction"][i]))
                stats.returns.append(float(info["episode_return"][i]))
                stats.lengths.append(int(info["episode_step"][i]))
                bar.update(1)
                bar.set_postfix(success=f"{np.mean(stats.success):.2f}")
                if renderer is not None and i == 0 and len(frames) > 0:
                    renderer.close()
                    renderer = None
            if len(ended):
                begin(ended)
    finally:
        bar.close()
        if renderer is not None:
            renderer.close()
    wall = time.perf_counter() - start
    result = stats.summary()
    result["env_steps_per_s"] = round(steps / wall, 1)
    if video is not None and frames:
        from pourlit.sim.render import write_video

        write_video(frames, video)
        result["video"] = str(video)
    return result


def evaluate(
    ckpt: str | Path | None,
    policy: str = "auto",
    episodes: int = 50,
    num_envs: int = 2,
    seed: int = 10_000,
    video: str | Path | None = None,
    env_overrides: dict | None = None,
    progress: bool = True,
    mode: str = "both",
) -> dict:
    """Evaluate an RL checkpoint, a skill checkpoint (prior rollouts) or the expert; returns
    the metrics dict.

    ``mode`` (RL checkpoints): ``sampled`` (how the agent acts: a sample of pi, or the best of
    its candidate skills by Q when the checkpoint was trained with skill selection), ``mean``
    (z = m tanh(mu(s))), or ``both``: the sampled episodes give the headline metrics and the
    mean-skill ones are added under ``mean_skill``, on the same seeds."""
    if mode not in ("sampled", "mean", "both"):
        raise ValueError(f"mode must be sampled, mean or both, got {mode!r}")
    if episodes < 1 or num_envs < 1:
        raise ValueError("--episodes and --num-envs must be positive")
    if video is not None:
        from pourlit.sim.render import check_video_path

        check_video_path(video)
    env_dict: dict = dict(env_overrides or {})
    kind = "expert" if policy == "expert" else None
    if kind is None:
        if ckpt is None:
            raise ValueError("give --ckpt PATH or --policy expert")
        kind = checkpoint_kind(ckpt)
    if kind == "expert":
        env = PouringVecEnv(EnvConfig.merged(env_dict, num_envs=num_envs))
        pol = ExpertPolicy(env, seed=seed)
        call, begin = pol, pol.begin
    elif kind == "rl":
        hl = HierarchicalPolicy.from_checkpoint(
            ckpt, num_envs, "mean" if mode == "mean" else "sampled", seed
        )
        base = hl.module._env_config(num_envs).to_dict()
        env = PouringVecEnv(EnvConfig.merged(base, env_dict, num_envs=num_envs))
        call, begin = hl, hl.begin
    else:
        if ckpt is None:
            raise ValueError("give --ckpt PATH or --policy expert")
        prior: Any = (
            BCPolicy(ckpt) if kind == "action_prior" else PriorPolicy(ckpt, num_envs, seed=seed)
        )
        stored = prior.skills.env_config or {}
        env_cfg = EnvConfig.merged(stored, env_dict, num_envs=num_envs)
        env = PouringVecEnv(env_cfg)
        if env.obs_dim != prior.skills.state_dim or env.action_dim != prior.skills.action_dim:
            raise ValueError(
                f"{ckpt}: checkpoint expects state/action sizes "
                f"{prior.skills.state_dim}/{prior.skills.action_dim}, the env has "
                f"{env.obs_dim}/{env.action_dim}"
            )
        call, begin = prior, prior.begin
    try:
        result = run_episodes(env, call, begin, episodes, seed, video, progress)
        if kind == "rl" and mode == "both":
            mean = HierarchicalPolicy(hl.module, num_envs, "mean", seed)
            extra = run_episodes(env, mean, mean.begin, episodes, seed, None, progress)
            result["mean_skill"] = {k: v for k, v in extra.items() if k != "env_steps_per_s"}
    finally:
        env.close()
    names = {"expert": "expert", "rl": "hierarchical_sac", "action_prior": "behaviour_cloning"}
    if kind == "rl" and hl.module.hparams.skill_ckpt is None:
        names["rl"] = "flat_sac"
    result["policy"] = names.get(kind, "skill_prior")
    if kind == "rl":
        result["policy"] += f" ({hl.name})"
    result["seed"] = seed
    result["reward"] = env.cfg.reward  # the return above is in this env's reward
    return result
