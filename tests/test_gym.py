"""Tests for pourlit.sim.gym_env.PouringGymEnv (the gymnasium view of one environment)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from pourlit.sim import task
from pourlit.sim.env import EnvConfig
from pourlit.sim.gym_env import PouringGymEnv


def test_check_env_passes() -> None:
    env = PouringGymEnv()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # infinite Box bounds are intended
            check_env(env, skip_render_check=True)
    finally:
        env.close()


def test_spaces() -> None:
    env = PouringGymEnv(EnvConfig(num_envs=4))  # num_envs is forced to 1
    try:
        assert env._env.num_envs == 1
        assert env.observation_space.shape == (task.OBS_DIM,)
        assert env.action_space.shape == (7,)
        assert env.action_space.low.min() == -1.0 and env.action_space.high.max() == 1.0
    finally:
        env.close()


def test_reset_seed_is_deterministic() -> None:
    env = PouringGymEnv()
    try:
        a, info_a = env.reset(seed=3)
        b, info_b = env.reset(seed=3)
        np.testing.assert_array_equal(a, b)
        assert info_a == info_b
        assert a.dtype == np.float32 and a.shape == (task.OBS_DIM,)
        c, _ = env.reset(seed=4)
        assert not np.array_equal(a, c)
        d, info_d = env.reset(options={"episode_seed": info_a["episode_seed"]})
        np.testing.assert_array_equal(a, d)
    finally:
        env.close()


def test_step_after_episode_end_raises() -> None:
    env = PouringGymEnv(EnvConfig(max_episode_steps=2))
    try:
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(7, np.float32))  # before any reset
        env.reset(seed=0)
        _, _, term, trunc, info = env.step(np.zeros(7, np.float32))
        assert not term and not trunc
        assert isinstance(info["poured_fraction"], float)
        assert info["episode_step"] == 1
        obs, reward, term, trunc, info = env.step(np.zeros(7, np.float32))
        assert trunc and not term
        assert isinstance(reward, float) and obs.shape == (task.OBS_DIM,)
        assert "final_obs" not in info
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(7, np.float32))
        env.reset(seed=1)
        env.step(np.zeros(7, np.float32))  # usable again after reset
    finally:
        env.close()


def test_render_rgb_array() -> None:
    env = PouringGymEnv(render_mode="rgb_array")
    try:
        env.reset(seed=0)
        frame = env.render()
        assert frame.shape == (240, 320, 3)
        assert frame.dtype == np.uint8
        assert frame.std() > 5.0  # not a constant image
        assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 50
    finally:
        env.close()


def test_render_none_and_bad_mode() -> None:
    env = PouringGymEnv()
    try:
        env.reset(seed=0)
        assert env.render() is None
    finally:
        env.close()
    with pytest.raises(ValueError, match="render_mode"):
        PouringGymEnv(render_mode="human")


def test_import_pourlit_registers_the_gymnasium_id() -> None:
    """In a fresh interpreter: ``import pourlit`` alone makes ``gymnasium.make`` work, and the
    made env passes gymnasium's checker."""
    code = (
        "import warnings, gymnasium, pourlit\n"
        "from gymnasium.utils.env_checker import check_env\n"
        "env = gymnasium.make('pourlit/Pouring-v0')\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('ignore')  # infinite Box bounds are intended\n"
        "    check_env(env.unwrapped, skip_render_check=True)\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(env.spec.id, obs.shape)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["pourlit/Pouring-v0", f"({task.OBS_DIM},)"]
