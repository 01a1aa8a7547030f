"""Tests for pourlit.sim.scene: UR3 kinematics, liquid spheres, collision filtering, resets."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from pourlit.sim.env import EnvConfig, PouringVecEnv
from pourlit.sim.scene import (
    ARM_JOINTS,
    BOTTLE_APOTHEM,
    BOTTLE_HEIGHT,
    BOTTLE_WALL,
    LiquidConfig,
    build_model,
    liquid_layout,
)

# Public UR3 Denavit-Hartenberg parameters (m, rad).
DH_A = (0.0, -0.24365, -0.21325, 0.0, 0.0, 0.0)
DH_D = (0.1519, 0.0, 0.0, 0.11235, 0.08535, 0.0819)
DH_ALPHA = (math.pi / 2, 0.0, 0.0, math.pi / 2, -math.pi / 2, 0.0)
BOTTLE_FLOOR = 0.006  # top of the bottle's bottom plate (assets/pouring.xml)


def dh_link(theta: float, d: float, a: float, alpha: float) -> np.ndarray:
    """T = Rz(theta) Tz(d) Tx(a) Rx(alpha), as a 4x4 homogeneous matrix."""
    ct, st, ca, sa = math.cos(theta), math.sin(theta), math.cos(alpha), math.sin(alpha)
    rz = np.array([[ct, -st, 0, 0], [st, ct, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    tz = np.eye(4)
    tz[2, 3] = d
    tx = np.eye(4)
    tx[0, 3] = a
    rx = np.array([[1, 0, 0, 0], [0, ca, -sa, 0], [0, sa, ca, 0], [0, 0, 0, 1.0]])
    return rz @ tz @ tx @ rx


def dh_forward(q: np.ndarray) -> np.ndarray:
    t = np.eye(4)
    for i in range(6):
        t = t @ dh_link(q[i], DH_D[i], DH_A[i], DH_ALPHA[i])
    return t


@pytest.fixture(scope="module")
def scene() -> tuple[mujoco.MjModel, object]:
    return build_model(LiquidConfig(count=32))


def can_collide(m: mujoco.MjModel, g1: int, g2: int) -> bool:
    return bool(
        (m.geom_contype[g1] & m.geom_conaffinity[g2])
        or (m.geom_contype[g2] & m.geom_conaffinity[g1])
    )


# -- kinematics --------------------------------------------------------------------------------
def test_dh_helper_known_pose() -> None:
    # Zero configuration of a UR3: the flange is at x = a2 + a3, y = -(d4 + d6), z = d1 - d5.
    t = dh_forward(np.zeros(6))
    np.testing.assert_allclose(t[:3, 3], [-0.4569, -0.19425, 0.06655], atol=1e-12)


def test_tool0_matches_ur3_dh_forward_kinematics(scene) -> None:
    model, idx = scene
    data = mujoco.MjData(model)
    tool = model.body("tool0").id
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.uniform(-math.pi, math.pi, 6)
        data.qpos[:] = model.qpos0
        data.qpos[idx.arm_qpos] = q
        mujoco.mj_kinematics(model, data)
        t = dh_forward(q)
        np.testing.assert_allclose(data.xpos[tool], t[:3, 3], atol=1e-9, rtol=0)
        np.testing.assert_allclose(data.xmat[tool].reshape(3, 3), t[:3, :3], atol=1e-9, rtol=0)


def test_arm_joints_are_hinges_about_their_z_axis(scene) -> None:
    model, _ = scene
    for name in ARM_JOINTS:
        j = model.joint(name)
        assert j.type[0] == mujoco.mjtJoint.mjJNT_HINGE
        np.testing.assert_array_equal(j.axis, [0.0, 0.0, 1.0])


# -- liquid ------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 32, 128])
def test_liquid_spheres_in_model(count: int) -> None:
    cfg = LiquidConfig(count=count)
    model, idx = build_model(cfg)
    spheres = [g for g in range(model.ngeom) if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_SPHERE]
    assert len(spheres) == count
    for g in spheres:
        assert model.geom_condim[g] == 1
        assert model.geom_priority[g] == 1
        assert model.geom_size[g, 0] == pytest.approx(cfg.radius)
        body = model.geom_bodyid[g]
        assert model.body_jntnum[body] == 3
        adr = model.body_jntadr[body]
        types = model.jnt_type[adr : adr + 3]
        assert all(t == mujoco.mjtJoint.mjJNT_SLIDE for t in types)
        np.testing.assert_array_equal(model.jnt_axis[adr : adr + 3], np.eye(3))
    assert idx.liquid_qpos.shape == (count, 3)
    assert len(np.unique(idx.liquid_qpos)) == 3 * count


@pytest.mark.parametrize("count", [1, 32, 128])
def test_liquid_layout_fits_inside_bottle(count: int) -> None:
    cfg = LiquidConfig(count=count)
    pos = liquid_layout(cfg)
    r = cfg.radius
    assert pos.shape == (count, 3)
    inner = BOTTLE_APOTHEM - BOTTLE_WALL  # inscribed radius of the inner wall
    assert (np.hypot(pos[:, 0], pos[:, 1]) + r <= inner).all()
    assert (pos[:, 2] - r >= BOTTLE_FLOOR).all()
    assert (pos[:, 2] + r < BOTTLE_HEIGHT).all()
    if count > 1:
        dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
        dist[np.diag_indices(count)] = np.inf
        assert dist.min() >= 2 * r * 0.99


def test_too_many_spheres_raise_mentioning_mouth() -> None:
    with pytest.raises(ValueError, match="mouth"):
        liquid_layout(LiquidConfig(count=1000))
    with pytest.raises(ValueError, match="mouth"):
        build_model(LiquidConfig(count=1000))


@pytest.mark.parametrize(
    "kwargs, word",
    [({"count": 0}, "count"), ({"radius": 0.02}, "radius"), ({"density": 0.0}, "density")],
)
def test_liquid_config_validation(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        LiquidConfig(**kwargs)


# -- collision filtering -----------------------------------------------------------------------
def test_arm_geoms_collide_with_nothing(scene) -> None:
    model, _ = scene
    arm = [g for g in range(model.ngeom) if model.geom_contype[g] == 16]
    assert len(arm) >= 10  # arm links and gripper body/fingers
    for g in arm:
        assert model.geom_conaffinity[g] == 0
        partners = [o for o in range(model.ngeom) if o != g and can_collide(model, g, o)]
        assert partners == [], model.geom(g).name


def test_only_pads_touch_the_bottle(scene) -> None:
    model, idx = scene
    root = model.body("ur3_base").id
    robot = [g for g in range(model.ngeom) if model.body_rootid[model.geom_bodyid[g]] == root]
    bottle = [g for g in range(model.ngeom) if model.geom_bodyid[g] == idx.bottle_body]
    assert len(bottle) == 13  # bottom + 12 walls
    touching = {model.geom(g).name for g in robot if any(can_collide(model, g, b) for b in bottle)}
    assert touching == {"pad_left", "pad_right"}
    for name in ("pad_left", "pad_right"):
        g = model.geom(name).id
        assert model.geom_condim[g] == 4
        assert model.geom_priority[g] == 2


def test_grasp_is_by_friction_only(scene) -> None:
    model, idx = scene
    bottle_joint = model.joint("bottle").id
    assert model.jnt_type[bottle_joint] == mujoco.mjtJoint.mjJNT_FREE
    assert model.body_parentid[idx.bottle_body] == 0  # a free body of the world
    assert model.neq >= 1
    fingers = {model.joint("finger_left").id, model.joint("finger_right").id}
    for e in range(model.neq):
        assert model.eq_type[e] not in (
            mujoco.mjtEq.mjEQ_WELD,
            mujoco.mjtEq.mjEQ_CONNECT,
        )
        assert model.eq_type[e] == mujoco.mjtEq.mjEQ_JOINT
        assert {int(model.eq_obj1id[e]), int(model.eq_obj2id[e])} == fingers


def test_reset_states_do_not_interpenetrate() -> None:
    env = PouringVecEnv(EnvConfig(num_envs=1))
    try:
        model = env.model
        data = mujoco.MjData(model)
        for seed in range(10):
            data.qpos[:] = env.sample_initial_qpos(seed)
            mujoco.mj_forward(model, data)
            assert data.ncon > 0  # at least bottle and cup rest on the table
            dist = data.contact.dist[: data.ncon]
            worst = int(np.argmin(dist))
            c = data.contact[worst]
            assert dist.min() > -1e-3, (
                seed,
                model.geom(c.geom1).name,
                model.geom(c.geom2).name,
                dist.min(),
            )
    finally:
        env.close()
