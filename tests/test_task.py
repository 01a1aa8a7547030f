"""Tests for pourlit.sim.task: quaternion helpers, liquid fractions, observation, rewards."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest
import torch

from pourlit.sim import task
from pourlit.sim.scene import CUP_HEIGHT, GRIPPER_STROKE

DTYPE = torch.float64


def random_quats(n: int, seed: int = 0) -> torch.Tensor:
    q = torch.as_tensor(np.random.default_rng(seed).normal(size=(n, 4)), dtype=DTYPE)
    return q / q.norm(dim=-1, keepdim=True)


def yaw_quat(angle: float) -> list[float]:
    return [math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)]


def quat_to_mat(q: torch.Tensor) -> torch.Tensor:
    """(N, 4) wxyz -> (N, 3, 3) via MuJoCo (independent of the code under test)."""
    out = np.empty((q.shape[0], 9))
    for i, qi in enumerate(q.numpy()):
        mujoco.mju_quat2Mat(out[i], qi)
    return torch.as_tensor(out.reshape(-1, 3, 3), dtype=DTYPE)


def make_state(
    n: int,
    liquid: torch.Tensor,
    bottle_pos: torch.Tensor | None = None,
    bottle_quat: torch.Tensor | None = None,
    cup_pos: torch.Tensor | None = None,
    cup_quat: torch.Tensor | None = None,
    **kw: torch.Tensor,
) -> task.TaskState:
    ident = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=DTYPE).expand(n, 4).clone()
    zeros3 = torch.zeros(n, 3, dtype=DTYPE)
    fields = {
        "arm_q": torch.zeros(n, 6, dtype=DTYPE),
        "arm_qd": torch.zeros(n, 6, dtype=DTYPE),
        "opening": torch.full((n,), GRIPPER_STROKE, dtype=DTYPE),
        "tcp_pos": zeros3.clone(),
        "tcp_quat": ident.clone(),
        "bottle_pos": zeros3.clone() if bottle_pos is None else bottle_pos,
        "bottle_quat": ident.clone() if bottle_quat is None else bottle_quat,
        "cup_pos": zeros3.clone() if cup_pos is None else cup_pos,
        "cup_quat": ident.clone() if cup_quat is None else cup_quat,
        "bottle_grasp": zeros3.clone(),
        "bottle_mouth": zeros3.clone(),
        "cup_rim": zeros3.clone(),
        "liquid": liquid,
    }
    fields.update(kw)
    fields["bottle_rot"] = quat_to_mat(fields["bottle_quat"])
    fields["cup_rot"] = quat_to_mat(fields["cup_quat"])
    return task.TaskState(**fields)


# -- quaternions -------------------------------------------------------------------------------
def test_quat_mul_with_conjugate_is_identity() -> None:
    q = random_quats(16)
    ident = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=DTYPE).expand(16, 4)
    torch.testing.assert_close(task.quat_mul(q, task.quat_conj(q)), ident, atol=1e-12, rtol=0)
    torch.testing.assert_close(task.quat_mul(task.quat_conj(q), q), ident, atol=1e-12, rtol=0)


def test_quat_mul_matches_mujoco() -> None:
    a, b = random_quats(8, seed=1), random_quats(8, seed=2)
    got = task.quat_mul(a, b).numpy()
    for i in range(8):
        want = np.empty(4)
        mujoco.mju_mulQuat(want, a[i].numpy(), b[i].numpy())
        np.testing.assert_allclose(got[i], want, atol=1e-12)


def test_quat_canonical_and_up_axis() -> None:
    q = random_quats(10, seed=5)
    c = task.quat_canonical(-q)
    assert (c[:, 0] >= 0).all()
    torch.testing.assert_close(c.abs(), q.abs())
    tilt = torch.tensor([[math.cos(0.3), math.sin(0.3), 0.0, 0.0]], dtype=DTYPE)  # 0.6 rad about x
    assert task.up_axis(tilt).item() == pytest.approx(math.cos(0.6))


# -- liquid state ------------------------------------------------------------------------------
def test_liquid_state_exact_fractions() -> None:
    bottle = torch.tensor([[0.45, 0.0, 0.0], [0.40, 0.10, 0.0]], dtype=DTYPE)
    # env 1: bottle lying on its side, its axis along world +x (rotated +90 deg about y)
    side = [math.cos(math.pi / 4), 0.0, math.sin(math.pi / 4), 0.0]
    bottle_q = torch.tensor([[1.0, 0.0, 0.0, 0.0], side], dtype=DTYPE)
    cup = torch.tensor([[0.42, -0.25, 0.0], [0.40, -0.20, 0.0]], dtype=DTYPE)
    cup_q = torch.tensor([yaw_quat(0.7), yaw_quat(-2.0)], dtype=DTYPE)
    liquid = torch.tensor(
        [
            [
                [0.45, 0.0, 0.02],  # bottle
                [0.47, 0.01, 0.15],  # bottle
                [0.45, 0.0, 0.19],  # bottle (just below the mouth)
                [0.42, -0.25, 0.01],  # cup
                [0.44, -0.23, 0.07],  # cup
                [1.00, 1.00, 0.007],  # table, far away: spilled
                [0.30, 0.40, 0.01],  # table: spilled
                [0.20, 0.30, 0.40],  # in the air: none of them
            ],
            [
                [0.50, 0.10, 0.0],  # bottle (axis along +x)
                [0.55, 0.11, 0.01],  # bottle
                [0.45, 0.10, 0.10],  # above the lying bottle: air
                [0.40, -0.20, 0.05],  # cup
                [0.40, -0.20, 0.10],  # above the cup's rim: air
                [0.80, 0.00, 0.01],  # spilled
                [0.45, 0.0, 0.02],  # where env 0's bottle is: spilled here
                [0.10, 0.10, 0.02],  # spilled
            ],
        ],
        dtype=DTYPE,
    )
    s = make_state(2, liquid, bottle, bottle_q, cup, cup_q)
    liq = task.liquid_state(s)
    torch.testing.assert_close(liq.in_bottle, torch.tensor([3 / 8, 2 / 8]), check_dtype=False)
    torch.testing.assert_close(liq.in_cup, torch.tensor([2 / 8, 1 / 8]), check_dtype=False)
    torch.testing.assert_close(liq.spilled, torch.tensor([2 / 8, 3 / 8]), check_dtype=False)


def test_liquid_state_counts_cup_volume_in_cup_frame() -> None:
    # a tipped cup (90 deg about x): its inside is now along world -y
    cup_q = torch.tensor([[math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0, 0.0]], dtype=DTYPE)
    cup = torch.tensor([[0.4, 0.0, 0.05]], dtype=DTYPE)
    # the first sphere is inside the tipped cup; the second would be inside it if upright
    liquid = torch.tensor([[[0.4, -0.04, 0.05], [0.4, 0.03, 0.07]]], dtype=DTYPE)
    bottle = torch.tensor([[-1.0, -1.0, 0.0]], dtype=DTYPE)
    s = make_state(1, liquid, bottle_pos=bottle, cup_pos=cup, cup_quat=cup_q)
    liq = task.liquid_state(s)
    assert liq.in_cup.item() == pytest.approx(0.5)
    assert liq.in_bottle.item() == 0.0
    upright = make_state(1, liquid, bottle_pos=bottle, cup_pos=cup - torch.tensor([0, 0, 0.05]))
    assert task.liquid_state(upright).in_cup.item() == pytest.approx(1.0)
    assert CUP_HEIGHT > 0.07


# -- observation -------------------------------------------------------------------------------
def test_obs_names() -> None:
    assert len(task.OBS_NAMES) == task.OBS_DIM == 50
    assert len(set(task.OBS_NAMES)) == task.OBS_DIM
    assert len(task.ACTION_NAMES) == 7
    assert len(set(task.ACTION_NAMES)) == 7


def test_observation_layout() -> None:
    n = 3
    rng = np.random.default_rng(7)
    t = lambda *shape: torch.as_tensor(rng.normal(size=shape), dtype=DTYPE)  # noqa: E731
    liquid = t(n, 5, 3)
    s = make_state(
        n,
        liquid,
        bottle_pos=t(n, 3),
        bottle_quat=random_quats(n, 8),
        cup_pos=t(n, 3),
        cup_quat=random_quats(n, 9),
        arm_q=t(n, 6),
        arm_qd=t(n, 6),
        opening=torch.tensor([0.0, GRIPPER_STROKE / 2, GRIPPER_STROKE], dtype=DTYPE),
        tcp_pos=t(n, 3),
        tcp_quat=random_quats(n, 10),
        bottle_grasp=t(n, 3),
        bottle_mouth=t(n, 3),
        cup_rim=t(n, 3),
    )
    liq = task.liquid_state(s)
    obs = task.observation(s, liq)
    assert obs.shape == (n, task.OBS_DIM)
    assert obs.dtype == torch.float32

    def col(prefix: str) -> torch.Tensor:
        ids = [i for i, name in enumerate(task.OBS_NAMES) if name.startswith(prefix)]
        return obs[:, ids].double()

    def close(a: torch.Tensor, b: torch.Tensor) -> None:
        torch.testing.assert_close(a, b.double(), atol=1e-6, rtol=1e-6)

    close(col("arm_pos_"), s.arm_q / (2 * math.pi))
    close(col("gripper_opening"), torch.tensor([[-1.0], [0.0], [1.0]]))
    close(col("arm_vel_"), s.arm_qd)
    close(col("tcp_pos_"), s.tcp_pos)
    close(col("cup_rim_minus_bottle_mouth_"), s.cup_rim - s.bottle_mouth)
    close(col("bottle_pos_"), s.bottle_pos)
    close(col("cup_pos_"), s.cup_pos)
    close(col("liquid_centroid_"), liquid.mean(1))
    close(col("bottle_grasp_minus_tcp_"), s.bottle_grasp - s.tcp_pos)
    close(col("liquid_in_bottle"), liq.in_bottle[:, None])
    close(col("liquid_in_cup"), liq.in_cup[:, None])
    close(col("liquid_spilled"), liq.spilled[:, None])
    for prefix, q in (
        ("tcp_quat_", s.tcp_quat),
        ("bottle_quat_", s.bottle_quat),
        ("cup_quat_", s.cup_quat),
    ):
        got = col(prefix)
        assert (got[:, 0] >= 0).all()  # canonical sign
        close(got, q * torch.sign(q[:, :1]))
    # relative quaternion: rotating by tcp then rel gives the bottle orientation
    rel = col("tcp_to_bottle_quat_")
    back = task.quat_mul(s.tcp_quat, rel)
    close(back.abs(), s.bottle_quat.abs())


# -- rewards -----------------------------------------------------------------------------------
def random_task_state(n: int, seed: int) -> task.TaskState:
    """Random but plausible states: some grasped and lifted, some tilted near the cup."""
    rng = np.random.default_rng(seed)
    t = lambda x: torch.as_tensor(x, dtype=DTYPE)  # noqa: E731
    bottle_pos = t(
        np.c_[rng.uniform(0.3, 0.5, n), rng.uniform(-0.2, 0.2, n), rng.uniform(-0.1, 0.3, n)]
    )
    grasp = bottle_pos + t([0.0, 0.0, 0.1])
    tcp = grasp + t(rng.normal(scale=0.02, size=(n, 3)))
    s = make_state(
        n,
        t(rng.uniform([0.2, -0.4, 0.0], [0.6, 0.3, 0.3], size=(n, 6, 3))),
        bottle_pos=bottle_pos,
        bottle_quat=random_quats(n, seed + 1),
        cup_pos=t(np.c_[rng.uniform(0.3, 0.5, n), rng.uniform(-0.3, 0.3, n), np.zeros(n)]),
        cup_quat=random_quats(n, seed + 2),
        opening=t(rng.uniform(0.04, 0.085, n)),
        tcp_pos=tcp,
        bottle_grasp=grasp,
        bottle_mouth=bottle_pos + t([0.0, 0.0, 0.195]),
        cup_rim=t(np.c_[rng.uniform(0.3, 0.5, n), rng.uniform(-0.3, 0.3, n), np.full(n, 0.08)]),
    )
    return s


def test_dense_reward_terms_in_range_and_sum() -> None:
    s = random_task_state(256, seed=11)
    liq = task.liquid_state(s)
    prog = task.progress(s)
    r, terms = task.dense_reward(s, liq, prog)
    assert r.shape == (256,)
    assert set(terms) == {"reach", "grasp", "lift", "approach", "tilt", "poured", "spilled"}
    for name, v in terms.items():
        assert v.shape == (256,), name
        assert torch.isfinite(v).all(), name
        assert (v >= 0).all() and (v <= 1).all(), name
    stage = sum(terms[k] for k in ("reach", "grasp", "lift", "approach", "tilt"))
    torch.testing.assert_close(r, 0.1 * stage + terms["poured"] - terms["spilled"])
    assert (r >= -1).all() and (r <= 1.5).all()
    # the random states exercise every stage at least once
    assert prog.grasped.any() and prog.lifted.any() and (terms["reach"] > 0.5).any()


def test_dense_reward_reach_is_one_at_the_grasp_point() -> None:
    s = random_task_state(4, seed=3)
    s.tcp_pos = s.bottle_grasp.clone()
    s.opening = torch.full((4,), 0.06, dtype=DTYPE)  # closed on the bottle
    liq = task.liquid_state(s)
    prog = task.progress(s)
    _, terms = task.dense_reward(s, liq, prog)
    torch.testing.assert_close(terms["reach"], torch.ones(4, dtype=DTYPE))
    torch.testing.assert_close(terms["grasp"], torch.ones(4))


def test_sparse_reward_is_poured_gain() -> None:
    liq = task.LiquidState(
        in_bottle=torch.tensor([0.5, 0.0, 1.0]),
        in_cup=torch.tensor([0.25, 1.0, 0.0]),
        spilled=torch.tensor([0.25, 0.0, 0.0]),
    )
    prev = torch.tensor([0.0, 0.75, 0.5])
    torch.testing.assert_close(task.sparse_reward(liq, prev), torch.tensor([0.25, 0.25, -0.5]))


def test_numpy_and_torch_give_the_same_values() -> None:
    """The env computes the task in numpy on the CPU and in torch on an accelerator
    (pourlit.sim.arrays): one definition, the same values and dtypes in both libraries."""
    s = random_task_state(64, seed=5)
    s_np = task.TaskState(**{k: v.numpy() for k, v in vars(s).items()})
    out = {}
    for name, state in (("torch", s), ("numpy", s_np)):
        liq = task.liquid_state(state)
        prog = task.progress(state)
        r, terms = task.dense_reward(state, liq, prog)
        out[name] = {
            "obs": task.observation(state, liq),
            "reward": r,
            **{f"liq_{k}": v for k, v in vars(liq).items()},
            **{f"prog_{k}": v for k, v in vars(prog).items()},
            **{f"term_{k}": v for k, v in terms.items()},
        }
    assert out["torch"].keys() == out["numpy"].keys()
    for key, t in out["torch"].items():
        a = out["numpy"][key]
        assert isinstance(a, np.ndarray), key
        assert torch.from_numpy(a).dtype == t.dtype, key
        np.testing.assert_allclose(a, t.numpy(), rtol=0, atol=1e-12, err_msg=key)
