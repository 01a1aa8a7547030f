"""A gymnasium view of one pouring environment (numpy in and out, no auto-reset).

env = PouringGymEnv(EnvConfig())   # or: gymnasium.make("pourlit/Pouring-v0", cfg=EnvConfig())
                                   # (``import pourlit`` registers the id)
obs, info = env.reset(seed=0)
obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np

from pourlit.sim.env import EnvConfig, PouringVecEnv


class PouringGymEnv(gym.Env):
    """One pouring environment; ``render_mode="rgb_array"`` returns camera images."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}

    def __init__(self, cfg: EnvConfig | None = None, render_mode: str | None = None) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        cfg = dataclasses.replace(cfg or EnvConfig(), num_envs=1)
        self._env = PouringVecEnv(cfg, autoreset=False)
        d = self._env.obs_dim
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (d,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self._env.action_dim,), np.float32)
        self.render_mode = render_mode
        self._renderer = None
        self._done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(2**31 - 1))
        if options and "episode_seed" in options:
            episode_seed = int(options["episode_seed"])
        obs = self._env.reset_to([episode_seed])
        self._done = False
        return obs[0].numpy().copy(), {"episode_seed": episode_seed}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("episode has ended; call reset()")
        a = np.asarray(action, dtype=np.float64).reshape(1, -1)
        obs, reward, term, trunc, info = self._env.step(a)
        terminated, truncated = bool(term[0]), bool(trunc[0])
        self._done = terminated or truncated
        out = {
            k: (v[0].item() if hasattr(v, "ndim") and v.ndim >= 1 and v.shape[0] == 1 else v)
            for k, v in info.items()
            if k not in ("final_obs",)
        }
        return obs[0].numpy().copy(), float(reward[0]), terminated, truncated, out

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            from pourlit.sim.render import Renderer

            self._renderer = Renderer(self._env.model, 240, 320, "front")
        return self._renderer.frame(self._env.mj_data(0))

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._env.close()
