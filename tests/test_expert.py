"""Tests for the damped least-squares IK and the scripted pouring expert."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from pourlit.expert.ik import DampedLeastSquaresIK, rotation_error
from pourlit.expert.pour import ExpertParams, ScriptedPourExpert
from pourlit.sim.env import EnvConfig, PouringVecEnv


@pytest.fixture(scope="module")
def env1():
    env = PouringVecEnv(EnvConfig(num_envs=1), autoreset=False)
    yield env
    env.close()


def rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_rotation_error() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        r = np.empty(9)
        mujoco.mju_quat2Mat(r, q)
        np.testing.assert_array_equal(rotation_error(r.reshape(3, 3), r.reshape(3, 3)), 0.0)
    np.testing.assert_allclose(rotation_error(rot_z(0.3), np.eye(3)), [0, 0, 0.3], atol=1e-12)
    np.testing.assert_allclose(rotation_error(np.eye(3), rot_z(0.3)), [0, 0, -0.3], atol=1e-12)


def test_ik_reaches_a_reachable_pose(env1) -> None:
    ix = env1.idx
    ik = DampedLeastSquaresIK(env1.model, "tcp", ix.arm_qpos, ix.arm_dof)
    rng = np.random.default_rng(1)
    for seed in range(5):
        start = env1.sample_initial_qpos(seed)
        goal = start.copy()
        goal[ix.arm_qpos] += rng.uniform(-0.25, 0.25, 6)
        pos, rot = ik.forward(goal)
        q, err = ik.solve(start, pos, rot, iterations=100)
        assert err < 1e-3
        reached = start.copy()
        reached[ix.arm_qpos] = q
        p2, r2 = ik.forward(reached)
        assert np.linalg.norm(p2 - pos) < 1e-3
        assert np.linalg.norm(rotation_error(rot, r2)) < 1e-3
        assert np.linalg.norm(q - start[ix.arm_qpos]) > 0.05  # it did move


def test_ik_forward_matches_the_tcp_site(env1) -> None:
    ix = env1.idx
    ik = DampedLeastSquaresIK(env1.model, "tcp", ix.arm_qpos, ix.arm_dof)
    qpos = env1.sample_initial_qpos(3)
    data = mujoco.MjData(env1.model)
    data.qpos[:] = qpos
    mujoco.mj_kinematics(env1.model, data)
    pos, rot = ik.forward(qpos)
    np.testing.assert_allclose(pos, data.site_xpos[ix.tcp_site], atol=1e-12)
    np.testing.assert_allclose(rot.ravel(), data.site_xmat[ix.tcp_site], atol=1e-12)


def test_expert_params_sample() -> None:
    a = ExpertParams.sample(np.random.default_rng(0))
    b = ExpertParams.sample(np.random.default_rng(1))
    c = ExpertParams.sample(np.random.default_rng(0))
    assert a != b
    assert a == c
    for p in (a, b):
        assert 0.06 <= p.standoff <= 0.09
        assert math.radians(105) <= p.pour_angle <= math.radians(125)
        assert 35 <= p.hold_steps < 60


def test_expert_act_requires_begin(env1) -> None:
    env1.reset_to([0])
    expert = ScriptedPourExpert(env1)
    with pytest.raises(RuntimeError, match="begin"):
        expert.act()
    expert.begin()
    a = expert.act()
    assert a.shape == (1, 7)
    assert np.abs(a).max() <= 1.0
    assert a[0, 6] == 1.0  # jaw opening during the pre-grasp
    assert expert.phase(0) == "pregrasp"


def bottle_partners(env: PouringVecEnv, scratch: mujoco.MjData) -> set[str]:
    """Names of geoms in contact with the bottle (contacts recomputed from the full state)."""
    m = env.model
    mujoco.mj_setState(m, scratch, env.backend.state[0], mujoco.mjtState.mjSTATE_FULLPHYSICS)
    mujoco.mj_forward(m, scratch)
    body = env.idx.bottle_body
    names = set()
    for k in range(scratch.ncon):
        g1, g2 = scratch.contact.geom1[k], scratch.contact.geom2[k]
        b1, b2 = m.geom_bodyid[g1], m.geom_bodyid[g2]
        if b1 == body and b2 != body:
            names.add(m.geom(g2).name)
        elif b2 == body and b1 != body:
            names.add(m.geom(g1).name)
    return names


@pytest.mark.slow
@pytest.mark.parametrize("episode_seed", [1, 2])
def test_expert_pours_holding_by_friction(env1, episode_seed: int) -> None:
    env1.reset_to([episode_seed])
    expert = ScriptedPourExpert(env1, seed=0)
    expert.begin()
    scratch = mujoco.MjData(env1.model)
    bz = env1.idx.bottle_qpos + 2
    lifted_steps = 0
    phases = set()
    for _ in range(env1.cfg.max_episode_steps):
        _, _, terminated, truncated, info = env1.step(expert.act())
        phases.add(expert.phase(0))
        if env1.mj_data(0).qpos[bz] > 0.05:
            lifted_steps += 1
            partners = bottle_partners(env1, scratch)
            others = {n for n in partners if not n.startswith("liquid")}
            assert others == {"pad_left", "pad_right"}, (expert.phase(0), partners)
        if terminated[0] or truncated[0]:
            break
    assert terminated[0] or truncated[0]
    assert lifted_steps > 50
    assert {"lift", "carry", "tilt", "untilt"} <= phases
    assert bool(info["success"][0])
    assert float(info["poured_fraction"][0]) >= 0.8
    assert not bool(info["unstable"][0])
