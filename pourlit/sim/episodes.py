"""Rolling a policy out in a vectorised env on seeded episodes: the episode runner that
training's validation and ``pourlit evaluate`` share.

A policy here is any callable ``obs (N, d_s) -> actions (N, d_a)`` plus a ``begin(ids)`` that
is told which envs start a new episode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from pourlit.sim.env import PouringVecEnv


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


def run_episodes(
    env: PouringVecEnv,
    policy: Callable[[torch.Tensor], torch.Tensor],
    begin: Callable[[np.ndarray], None],
    episodes: int,
    seed: int,
    frames: list[np.ndarray] | None = None,
    progress: bool = True,
) -> dict:
    """Run ``episodes`` episodes (the first ``episodes`` to finish, from seeded resets); when
    ``frames`` is a list, env 0's first episode is rendered into it."""
    stats = EpisodeStats()
    obs = env.reset(seed=seed)
    begin(np.arange(env.num_envs))
    renderer = None
    if frames is not None:
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
                if renderer is not None and i == 0 and frames:
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
    return result
