"""Tests for pourlit.sim.env.PouringVecEnv: reset, step outputs, truncation, instability."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pourlit.sim import task
from pourlit.sim.env import EnvConfig, PouringVecEnv
from pourlit.sim.scene import LiquidConfig

OBS = {name: i for i, name in enumerate(task.OBS_NAMES)}


def make_env(**kw) -> PouringVecEnv:
    autoreset = kw.pop("autoreset", True)
    return PouringVecEnv(EnvConfig(**kw), autoreset=autoreset)


@pytest.fixture
def env2():
    env = make_env(num_envs=2)
    yield env
    env.close()


def zeros(env: PouringVecEnv) -> np.ndarray:
    return np.zeros((env.num_envs, env.action_dim))


# -- reset -------------------------------------------------------------------------------------
def test_reset_is_deterministic_per_seed(env2) -> None:
    a = env2.reset(seed=3).clone()
    seeds_a = env2.episode_seed.copy()
    b = env2.reset(seed=3).clone()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    np.testing.assert_array_equal(seeds_a, env2.episode_seed)
    c = env2.reset(seed=4)
    assert not torch.equal(a, c)
    assert seeds_a[0] != seeds_a[1]  # environments of one reset differ too
    assert not torch.equal(a[0], a[1])


def test_reset_to_replays_the_episode_seed(env2) -> None:
    obs = env2.reset(seed=11).clone()
    seeds = env2.episode_seed.copy()
    env2.reset(seed=12)
    again = env2.reset_to(seeds)
    torch.testing.assert_close(obs, again, rtol=0, atol=0)
    qpos = env2.sample_initial_qpos(int(seeds[1]))
    np.testing.assert_array_equal(env2.mj_data(1).qpos, qpos)


def test_initial_state_is_within_randomisation_ranges(env2) -> None:
    rc = env2.cfg.randomisation
    for seed in range(20):
        q = env2.sample_initial_qpos(seed)
        b, c = env2.idx.bottle_qpos, env2.idx.cup_qpos
        assert rc.bottle_x[0] <= q[b] <= rc.bottle_x[1]
        assert rc.bottle_y[0] <= q[b + 1] <= rc.bottle_y[1]
        assert rc.cup_x[0] <= q[c] <= rc.cup_x[1]
        assert rc.cup_side_offset[0] <= abs(q[c + 1] - q[b + 1]) <= rc.cup_side_offset[1]
        home = np.radians([0.0, -80.0, -115.0, -165.0, -90.0, 0.0])
        assert np.abs(q[env2.idx.arm_qpos] - home).max() <= rc.arm_noise


def test_step_before_reset_raises(env2) -> None:
    with pytest.raises(RuntimeError, match="reset"):
        env2.step(zeros(env2))


# -- step outputs ------------------------------------------------------------------------------
def test_step_shapes_dtypes_and_info(env2) -> None:
    obs0 = env2.reset(seed=0)
    assert obs0.shape == (2, task.OBS_DIM) and obs0.dtype == torch.float32
    actions = torch.as_tensor(np.random.default_rng(0).uniform(-1, 1, (2, 7)))
    obs, reward, terminated, truncated, info = env2.step(actions)
    assert obs.shape == (2, task.OBS_DIM) and obs.dtype == torch.float32
    assert reward.shape == (2,) and reward.dtype == torch.float32
    assert terminated.shape == (2,) and terminated.dtype == torch.bool
    assert truncated.shape == (2,) and truncated.dtype == torch.bool
    for key in ("poured_fraction", "spilled_fraction", "success", "unstable"):
        assert info[key].shape == (2,), key
    for key in ("episode_seed", "episode_step"):
        assert info[key].shape == (2,), key
    assert info["success"].dtype == torch.bool and info["unstable"].dtype == torch.bool
    np.testing.assert_array_equal(info["episode_step"].numpy(), [1, 1])
    np.testing.assert_array_equal(info["episode_seed"].numpy(), env2.episode_seed)
    assert torch.isfinite(obs).all() and torch.isfinite(reward).all()
    assert not terminated.any() and not truncated.any()
    assert "final_obs" not in info
    assert env2.stats["env_steps"] == 2


def test_zero_actions_keep_bottle_upright_and_full(env2) -> None:
    env2.reset(seed=1)
    start = env2.backend.kinematics().qpos[:, env2.idx.bottle_qpos : env2.idx.bottle_qpos + 3]
    start = start.clone()
    for _ in range(5):
        obs, _, terminated, truncated, info = env2.step(zeros(env2))
        assert not (terminated | truncated).any()
        torch.testing.assert_close(info["in_bottle_fraction"], torch.ones(2))
        torch.testing.assert_close(obs[:, OBS["liquid_in_bottle"]], torch.ones(2))
        torch.testing.assert_close(info["poured_fraction"], torch.zeros(2))
    quat = obs[:, [OBS[f"bottle_quat_{a}"] for a in "wxyz"]].double()
    assert (task.up_axis(quat) > math.cos(math.radians(2))).all()
    pos = env2.backend.kinematics().qpos[:, env2.idx.bottle_qpos : env2.idx.bottle_qpos + 3]
    assert (pos - start).abs().max() < 2e-3


def test_action_deltas_are_bounded(env2) -> None:
    env2.reset(seed=2)
    before = env2.arm_targets
    grip = env2.grip_target.clone()
    a = np.zeros((2, 7))
    a[0, :6] = 5.0  # clipped to 1
    a[1, 6] = -1.0
    env2.step(a)
    np.testing.assert_allclose(env2.arm_targets[0] - before[0], env2.cfg.arm_step, atol=1e-12)
    np.testing.assert_allclose(env2.arm_targets[1], before[1], atol=1e-12)
    assert env2.grip_target[1].item() == pytest.approx(grip[1].item() - env2.cfg.gripper_step)


def test_wrong_action_shape_raises(env2) -> None:
    env2.reset(seed=0)
    with pytest.raises(ValueError, match=r"\(2, 7\)"):
        env2.step(np.zeros((2, 6)))
    with pytest.raises(ValueError, match=r"\(2, 7\)"):
        env2.step(np.zeros(7))


# -- episode ends ------------------------------------------------------------------------------
def test_truncation_and_autoreset() -> None:
    env = make_env(num_envs=2, max_episode_steps=3)
    try:
        env.reset(seed=5)
        old_seeds = env.episode_seed.copy()
        for t in range(1, 3):
            _, _, terminated, truncated, info = env.step(zeros(env))
            assert not truncated.any() and not terminated.any()
            np.testing.assert_array_equal(info["episode_step"].numpy(), [t, t])
        obs, _, terminated, truncated, info = env.step(zeros(env))
        assert truncated.all() and not terminated.any()
        np.testing.assert_array_equal(info["episode_step"].numpy(), [3, 3])
        np.testing.assert_array_equal(info["episode_seed"].numpy(), old_seeds)
        assert info["final_obs"].shape == obs.shape
        for i in range(2):
            assert not torch.equal(info["final_obs"][i], obs[i])
        # the returned observation is the first of the new episode
        np.testing.assert_array_equal(env.episode_step, [0, 0])
        assert (env.episode_seed != old_seeds).all()
        fresh = PouringVecEnv(EnvConfig(num_envs=2), autoreset=False)
        torch.testing.assert_close(fresh.reset_to(env.episode_seed), obs, rtol=0, atol=0)
        fresh.close()
        assert env.stats["episodes"] == 2
        assert "episode_return" in info and info["episode_return"].shape == (2,)
        _, _, _, truncated, info = env.step(zeros(env))
        assert not truncated.any()
        np.testing.assert_array_equal(info["episode_step"].numpy(), [1, 1])
    finally:
        env.close()


def test_no_autoreset_keeps_state() -> None:
    env = make_env(num_envs=1, max_episode_steps=3, autoreset=False)
    try:
        env.reset(seed=5)
        seed = env.episode_seed.copy()
        for _ in range(3):
            obs, _, _, truncated, info = env.step(zeros(env))
        assert truncated.all()
        torch.testing.assert_close(info["final_obs"], obs, rtol=0, atol=0)
        np.testing.assert_array_equal(env.episode_step, [3])
        np.testing.assert_array_equal(env.episode_seed, seed)
        qpos = env.mj_data(0).qpos.copy()
        obs2, *_ = env.step(zeros(env))
        assert np.abs(env.mj_data(0).qpos - qpos).max() < 1e-2  # continued, not reset
        np.testing.assert_array_equal(env.episode_step, [4])
        assert torch.isfinite(obs2).all()
    finally:
        env.close()


def corrupt_and_step(env: PouringVecEnv, value: float, where: str):
    """Put ``value`` into env 0's state (a liquid sphere's z velocity or an arm angle)."""
    nq = env.model.nq
    if where == "qvel":
        dof = env.model.jnt_dofadr[env.model.joint("liquid000_z").id]
        env.backend.state[0, 1 + nq + dof] = value  # FULLPHYSICS: time, qpos, qvel, ...
    else:
        env.backend.state[0, 1 + env.idx.arm_qpos[4]] = value
    return env.step(zeros(env))


def test_runaway_velocity_terminates_as_unstable(env2) -> None:
    env2.reset(seed=0)
    before = env2.stats["unstable"]
    obs, reward, terminated, truncated, info = corrupt_and_step(env2, 500.0, "qvel")
    assert terminated.tolist() == [True, False]
    assert info["unstable"].tolist() == [True, False]
    assert not info["success"][0]
    assert torch.isfinite(reward).all() and reward[0] == 0.0
    assert torch.isfinite(obs).all() and torch.isfinite(info["final_obs"]).all()
    assert env2.stats["unstable"] == before + 1
    assert env2.episode_step.tolist() == [0, 1]  # env 0 was reset, env 1 goes on


def test_nan_state_terminates_as_unstable(env2) -> None:
    env2.reset(seed=0)
    obs, reward, terminated, _, info = corrupt_and_step(env2, float("nan"), "qpos")
    assert torch.isfinite(reward).all() and torch.isfinite(obs).all()
    assert info["unstable"].tolist() == [True, False]
    assert terminated[0]
    assert env2.stats["unstable"] == 1


# -- configuration -----------------------------------------------------------------------------
def test_from_dict_round_trip_and_lists() -> None:
    cfg = EnvConfig(num_envs=2, liquid=LiquidConfig(count=8), max_episode_steps=7)
    d = cfg.to_dict()
    d["randomisation"]["bottle_x"] = [0.41, 0.42]  # as YAML/JSON would give it
    back = EnvConfig.from_dict(d)
    assert back.liquid == LiquidConfig(count=8)
    assert back.randomisation.bottle_x == (0.41, 0.42)
    assert back.max_episode_steps == 7


def test_from_dict_unknown_key() -> None:
    with pytest.raises(ValueError, match="bogus_key") as e:
        EnvConfig.from_dict({"num_envs": 1, "bogus_key": 3})
    assert "in env" in str(e.value)


def test_from_dict_unknown_nested_key() -> None:
    with pytest.raises(ValueError, match="colour") as e:
        EnvConfig.from_dict({"liquid": {"count": 4, "colour": "red"}})
    assert "env.liquid" in str(e.value)
    with pytest.raises(ValueError, match="cup_z"):
        EnvConfig.from_dict({"randomisation": {"cup_z": [0, 1]}})


@pytest.mark.parametrize(
    "kw, word",
    [
        ({"num_envs": 0}, "num_envs"),
        ({"reward": "staged"}, "reward"),
        ({"backend": "isaacgym"}, "backend"),
        ({"device": "cuda"}, "mujoco_warp"),
        ({"success_threshold": 0.0}, "success_threshold"),
        ({"max_episode_steps": 0}, "max_episode_steps"),
    ],
)
def test_config_validation(kw: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        EnvConfig(**kw)


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="backend"):
        PouringVecEnv(EnvConfig(backend="isaac"))


# -- batching ----------------------------------------------------------------------------------
def test_batch_equals_serial() -> None:
    rng = np.random.default_rng(42)
    actions = rng.uniform(-1, 1, (10, 3, 7))
    batch = make_env(num_envs=3)
    try:
        batch.reset(seed=9)
        seeds = batch.episode_seed.copy()
        rewards = []
        for a in actions:
            obs, r, *_ = batch.step(a)
            rewards.append(r)
    finally:
        batch.close()
    for i in range(3):
        single = make_env(num_envs=1)
        try:
            single.reset_to([seeds[i]])
            for t, a in enumerate(actions):
                o, r, *_ = single.step(a[i : i + 1])
                assert float(r[0]) == pytest.approx(float(rewards[t][i]), abs=1e-6)
        finally:
            single.close()
        torch.testing.assert_close(o[0], obs[i], atol=1e-6, rtol=0)


def test_sparse_reward_is_poured_gain() -> None:
    env = make_env(num_envs=1, reward="sparse")
    try:
        env.reset(seed=0)
        for _ in range(2):
            _, r, *_ = env.step(zeros(env))
            assert r.tolist() == [0.0]  # nothing poured, nothing gained
    finally:
        env.close()


def test_shaped_reward_is_the_per_step_gain_of_the_dense_potential() -> None:
    dense, shaped = make_env(num_envs=2, reward="dense"), make_env(num_envs=2, reward="shaped")
    try:
        dense.reset(seed=4)
        shaped.reset(seed=4)
        g = torch.Generator().manual_seed(0)
        prev = None
        for _ in range(6):
            a = torch.rand(2, 7, generator=g) * 2 - 1
            _, rd, *_ = dense.step(a)
            _, rs, *_ = shaped.step(a)
            if prev is not None:  # r_shaped(t) = phi(s_t) - phi(s_t-1), phi = dense reward
                torch.testing.assert_close(rs, rd - prev, atol=1e-6, rtol=0)
            prev = rd
    finally:
        dense.close()
        shaped.close()
    with pytest.raises(
        ValueError, match=r"env.reward must be one of \('dense', 'shaped', 'sparse'\)"
    ):
        make_env(num_envs=1, reward="staged")


def test_env_config_merged_layers_and_names_valid_modes() -> None:
    """One builder for stored config + overrides + env count; later layers win."""
    stored = {"reward": "dense", "max_episode_steps": 300, "num_envs": 8}
    cfg = EnvConfig.merged(stored, None, {"reward": "shaped"}, num_envs=2)
    assert (cfg.reward, cfg.max_episode_steps, cfg.num_envs) == ("shaped", 300, 2)
    assert EnvConfig.merged(stored).num_envs == 8
    with pytest.raises(
        ValueError, match=r"env.reward must be one of \('dense', 'shaped', 'sparse'\)"
    ):
        EnvConfig.merged({"reward": "potential"})
    with pytest.raises(ValueError, match=r"env.backend must be one of \('mujoco', 'mujoco_warp'\)"):
        EnvConfig.merged({"backend": "isaac"})
    with pytest.raises(ValueError, match="bogus"):
        EnvConfig.merged({"bogus": 1})


def test_torch_path_equals_the_numpy_path(monkeypatch) -> None:
    """On the CPU the env's per-step arithmetic runs in numpy; on an accelerator in torch
    (pourlit.sim.arrays). Forced to torch on the CPU, it gives the same outputs."""
    from pourlit.sim import arrays

    rng = np.random.default_rng(3)
    actions = rng.uniform(-1, 1, (12, 2, 7))
    outs = {}
    for lib in ("numpy", "torch"):
        if lib == "torch":
            monkeypatch.setattr(arrays, "for_device", lambda device: torch)
        env = make_env(num_envs=2, max_episode_steps=5, reward="shaped")
        try:
            assert env._xp.__name__ == lib
            outs[lib] = [env.reset(seed=1)]
            for a in actions:
                obs, r, term, trunc, info = env.step(a)
                outs[lib] += [obs, r, term, trunc, *info.values()]
            outs[lib] += [env.episode_return, env.arm_target, env.grip_target]
        finally:
            env.close()
    assert len(outs["numpy"]) == len(outs["torch"])
    for a, b in zip(outs["numpy"], outs["torch"], strict=True):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
