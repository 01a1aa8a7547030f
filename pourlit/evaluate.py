"""``pourlit evaluate``: roll a policy out in the simulator on held-out seeds, report metrics.

Policies: an RL checkpoint (``pourlit.rl.acting.AgentPolicy``), a skill checkpoint
("prior rollouts": every H steps draw z from the learned prior q_hat(z | s_t) and run the
closed-loop decoder), an action-prior checkpoint (BC), or the scripted expert (``--policy
expert``). Episodes run in ``pourlit.sim.episodes.run_episodes``, which training's validation
uses too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pourlit.checkpoints import checkpoint_kind
from pourlit.rl.acting import AgentPolicy, PriorPolicy
from pourlit.rl.options import EVAL_MODES
from pourlit.rl.spaces import make_env
from pourlit.sim.env import EnvConfig, PouringVecEnv
from pourlit.sim.episodes import run_episodes


def load_rl_policy(
    ckpt: str | Path, num_envs: int, mode: str = "sampled", seed: int = 0
) -> AgentPolicy:
    """An ``AgentPolicy`` acting with the module of an RL checkpoint (on the CPU)."""
    import contextvars

    from pourlit.rl.module import SACModule

    load = SACModule.load_from_checkpoint
    module = contextvars.Context().run(load, ckpt, map_location="cpu").eval()
    return AgentPolicy(module, num_envs, mode, seed)


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


def evaluate(
    ckpt: str | Path | None,
    policy: str = "auto",
    episodes: int = 50,
    num_envs: int = 2,
    seed: int = 10_000,
    video: str | Path | None = None,
    progress: bool = True,
    mode: str = "both",
    report: Callable[[dict], None] | None = None,
) -> dict:
    """Evaluate an RL checkpoint, a skill checkpoint (prior rollouts) or the expert; returns
    the metrics dict.

    ``mode`` (RL and skill checkpoints): ``sampled`` (how the agent acts: a sample of pi, or
    the best of its candidate skills by Q when the checkpoint was trained with skill selection;
    for a skill prior z ~ q_hat(z | s)), ``mean`` (z = m tanh(mu_pi(s) / c); for a skill prior
    z = mu_q_hat(s)), ``best_mean`` (RL only: the policy's mean skill or the prior's,
    whichever its critic values higher), or ``both``: the sampled episodes give the headline
    metrics and the mean-skill ones are added under ``mean_skill``, on the same seeds. Action
    priors (BC) act deterministically in every mode.

    ``report`` is called with the metrics before ``video`` is written, so a failed video write
    (a full disk) loses no results."""
    if mode not in (*EVAL_MODES, "both"):
        raise ValueError(f"mode must be one of {(*EVAL_MODES, 'both')}, got {mode!r}")
    if episodes < 1 or num_envs < 1:
        raise ValueError("--episodes and --num-envs must be positive")
    if video is not None:
        from pourlit.sim.render import check_video_path

        check_video_path(video)
    if policy == "expert":
        kind = "expert"
    elif ckpt is None:
        raise ValueError("give --ckpt PATH or --policy expert")
    else:
        kind = checkpoint_kind(ckpt)
    if kind == "expert":
        env = PouringVecEnv(EnvConfig.merged(num_envs=num_envs))
        pol = ExpertPolicy(env, seed=seed)
        call, begin = pol, pol.begin
    elif kind == "rl":
        hl = load_rl_policy(ckpt, num_envs, "sampled" if mode == "both" else mode, seed)
        env = make_env(hl.module.space, hl.module.hparams.env, num_envs, str(ckpt))
        call, begin = hl, hl.begin
    else:
        if mode == "best_mean":
            raise ValueError(f"{ckpt}: --mode best_mean needs an RL checkpoint (its critic)")
        prior: Any = (
            BCPolicy(ckpt)
            if kind == "action_prior"
            else PriorPolicy(ckpt, num_envs, seed, "mean" if mode == "mean" else "sampled")
        )
        env = PouringVecEnv(EnvConfig.merged(prior.skills.env_config, num_envs=num_envs))
        if env.obs_dim != prior.skills.state_dim or env.action_dim != prior.skills.action_dim:
            env.close()
            raise ValueError(
                f"{ckpt}: checkpoint expects state/action sizes "
                f"{prior.skills.state_dim}/{prior.skills.action_dim}, the env has "
                f"{env.obs_dim}/{env.action_dim}"
            )
        call, begin = prior, prior.begin
    try:
        frames: list | None = [] if video is not None else None
        result = run_episodes(env, call, begin, episodes, seed, frames, progress)
        if kind in ("rl", "skill") and mode == "both":
            mean: Any = (
                AgentPolicy(hl.module, num_envs, "mean", seed)
                if kind == "rl"
                else PriorPolicy(prior.skills, num_envs, seed, "mean")  # loaded once
            )
            extra = run_episodes(env, mean, mean.begin, episodes, seed, None, progress)
            result["mean_skill"] = {k: v for k, v in extra.items() if k != "env_steps_per_s"}
    finally:
        env.close()
    names = {"expert": "expert", "rl": "hierarchical_sac", "action_prior": "behaviour_cloning"}
    if kind == "rl" and hl.module.hparams.get("base_ckpt") is not None:
        names["rl"] = "residual_sac"
    elif kind == "rl" and hl.module.hparams.skill_ckpt is None:
        names["rl"] = "flat_sac"
    result["policy"] = names.get(kind, "skill_prior")
    if kind == "rl":
        result["policy"] += f" ({hl.name})"
    result["seed"] = seed
    result["reward"] = env.cfg.reward  # the return above is in this env's reward
    if frames:
        result["video"] = str(video)
    if report is not None:
        report(result)
    if frames:
        from pourlit.sim.render import write_video

        write_video(frames, video)
    return result
