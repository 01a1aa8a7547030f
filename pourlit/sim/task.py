"""The pouring task written once on torch tensors: observation, liquid state, reward, success.

Everything here takes batched tensors (leading dim N = environments) and works on any device,
so every physics backend shares it. Quaternions are (w, x, y, z).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pourlit.sim.scene import (
    BOTTLE_APOTHEM,
    BOTTLE_HEIGHT,
    CUP_HEIGHT,
    CUP_RADIUS,
    CUP_WALL,
    GRIPPER_STROKE,
)

ARM_LIMIT = 2 * math.pi  # joint range of every UR3 joint, rad

OBS_NAMES: tuple[str, ...] = (
    *(f"arm_pos_{j}" for j in range(6)),  # arm joint angles / 2 pi, in [-1, 1]
    "gripper_opening",  # jaw opening scaled to [-1, 1] (-1 closed, 1 open 85 mm)
    *(f"arm_vel_{j}" for j in range(6)),  # rad/s
    *(f"tcp_pos_{a}" for a in "xyz"),  # grasp point between the pads, m, world frame
    *(f"tcp_quat_{a}" for a in "wxyz"),
    *(f"cup_rim_minus_bottle_mouth_{a}" for a in "xyz"),  # m
    *(f"bottle_pos_{a}" for a in "xyz"),  # bottle base centre, m
    *(f"bottle_quat_{a}" for a in "wxyz"),
    *(f"cup_pos_{a}" for a in "xyz"),
    *(f"cup_quat_{a}" for a in "wxyz"),
    *(f"liquid_centroid_{a}" for a in "xyz"),  # mean sphere position, m
    *(f"bottle_grasp_minus_tcp_{a}" for a in "xyz"),  # m
    *(f"tcp_to_bottle_quat_{a}" for a in "wxyz"),  # bottle orientation in the tcp frame
    "liquid_in_bottle",  # fractions of spheres, in [0, 1]
    "liquid_in_cup",
    "liquid_spilled",
)
OBS_DIM = len(OBS_NAMES)
ACTION_NAMES: tuple[str, ...] = (
    *(f"arm_delta_{j}" for j in range(6)),
    "gripper_delta",
)

# Reward modes of the env: "dense" (the staged potential, paid every step), "shaped" (its
# per-step gain, so a return telescopes to the final potential), "sparse" (poured-fraction gain)
REWARDS: tuple[str, ...] = ("dense", "shaped", "sparse")

SPILL_HEIGHT = 0.03  # a sphere outside both vessels and below this height (m) is spilled
CUP_UPRIGHT_COS = math.cos(math.radians(30))
BOTTLE_UPRIGHT_COS = math.cos(math.radians(30))


# -- quaternion helpers ------------------------------------------------------------------------
def quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` of quaternions (..., 4): (w1 w2 - v1.v2, w1 v2 + w2 v1 +
    v1 x v2)."""
    aw, av = a[..., :1], a[..., 1:]
    bw, bv = b[..., :1], b[..., 1:]
    w = aw * bw - (av * bv).sum(-1, keepdim=True)
    return torch.cat((w, aw * bv + bw * av + torch.cross(av, bv, dim=-1)), dim=-1)


def quat_conj(q: torch.Tensor) -> torch.Tensor:
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quat_canonical(q: torch.Tensor) -> torch.Tensor:
    """The sign of ``q`` with w >= 0 (q and -q are the same rotation)."""
    return torch.where(q[..., :1] < 0, -q, q)


def up_axis(q: torch.Tensor) -> torch.Tensor:
    """World z component of the body's z axis (cosine of its tilt from vertical)."""
    x, y = q[..., 1], q[..., 2]
    return 1.0 - 2.0 * (x * x + y * y)


# -- state the task reads ----------------------------------------------------------------------
@dataclass
class TaskState:
    """Task-relevant quantities of N environments (tensors, leading dim N)."""

    arm_q: torch.Tensor  # (N, 6) rad
    arm_qd: torch.Tensor  # (N, 6) rad/s
    opening: torch.Tensor  # (N,) jaw opening, m
    tcp_pos: torch.Tensor  # (N, 3)
    tcp_quat: torch.Tensor  # (N, 4)
    bottle_pos: torch.Tensor  # (N, 3)
    bottle_quat: torch.Tensor  # (N, 4)
    cup_pos: torch.Tensor  # (N, 3)
    cup_quat: torch.Tensor  # (N, 4)
    bottle_rot: torch.Tensor  # (N, 3, 3) rotation matrix of the bottle frame
    cup_rot: torch.Tensor  # (N, 3, 3)
    bottle_grasp: torch.Tensor  # (N, 3) grasp point on the bottle axis, world
    bottle_mouth: torch.Tensor  # (N, 3)
    cup_rim: torch.Tensor  # (N, 3) centre of the cup's rim
    liquid: torch.Tensor  # (N, M, 3) sphere centres, world


@dataclass
class LiquidState:
    in_bottle: torch.Tensor  # (N,) fractions in [0, 1]
    in_cup: torch.Tensor
    spilled: torch.Tensor


def liquid_state(s: TaskState) -> LiquidState:
    """Fractions of spheres inside the bottle, inside the cup, and spilled on the table."""

    # Both vessels at once (k = 0 bottle, 1 cup). Row vectors: (p - pos) @ R expresses p in
    # the frame whose axes are R's columns.
    pos = torch.stack((s.bottle_pos, s.cup_pos), 1)  # (N, 2, 3)
    rot = torch.stack((s.bottle_rot, s.cup_rot), 1)  # (N, 2, 3, 3)
    local = (s.liquid[:, None] - pos[:, :, None]) @ rot  # (N, 2, M, 3)
    radius = local.new_tensor([BOTTLE_APOTHEM, CUP_RADIUS - CUP_WALL])[:, None]
    height = local.new_tensor([BOTTLE_HEIGHT, CUP_HEIGHT])[:, None]
    z = local[..., 2]
    inside = (torch.linalg.vector_norm(local[..., :2], dim=-1) < radius) & (z > 0) & (z < height)
    spilled = ~inside.any(1) & (s.liquid[..., 2] < SPILL_HEIGHT)
    fractions = inside.to(local.dtype).mean(-1)  # (N, 2)
    return LiquidState(
        in_bottle=fractions[:, 0],
        in_cup=fractions[:, 1],
        spilled=spilled.to(local.dtype).mean(-1),
    )


def observation(s: TaskState, liq: LiquidState) -> torch.Tensor:
    """The observation vector, ``(N, OBS_DIM)`` float32, in the order of ``OBS_NAMES``."""
    rel_quat = quat_mul(quat_conj(s.tcp_quat), s.bottle_quat)
    quats = quat_canonical(torch.stack((s.tcp_quat, s.bottle_quat, s.cup_quat, rel_quat), 1))
    tcp_quat, bottle_quat, cup_quat, rel_quat = quats.unbind(1)
    parts = [
        s.arm_q / ARM_LIMIT,
        (2.0 * s.opening / GRIPPER_STROKE - 1.0)[:, None],
        s.arm_qd,
        s.tcp_pos,
        tcp_quat,
        s.cup_rim - s.bottle_mouth,
        s.bottle_pos,
        bottle_quat,
        s.cup_pos,
        cup_quat,
        s.liquid.mean(dim=1),
        s.bottle_grasp - s.tcp_pos,
        rel_quat,
        torch.stack((liq.in_bottle, liq.in_cup, liq.spilled), -1).to(s.arm_q.dtype),
    ]
    return torch.cat(parts, dim=-1).to(torch.float32)


@dataclass
class Progress:
    """Per-environment task flags, (N,) bool tensors."""

    grasped: torch.Tensor
    lifted: torch.Tensor
    bottle_upright: torch.Tensor
    bottle_dropped: torch.Tensor
    cup_upright: torch.Tensor
    tilt: torch.Tensor  # bottle tilt from vertical, rad (float)


def progress(s: TaskState) -> Progress:
    bottle_up = up_axis(s.bottle_quat)
    tilt = torch.arccos(bottle_up.clamp(-1.0, 1.0))
    near = (s.bottle_grasp - s.tcp_pos).norm(dim=-1) < 0.03
    closed_on_bottle = (s.opening > 0.050) & (s.opening < 0.070)
    grasped = near & closed_on_bottle
    # Dropped: lying on the table (tilted, low) or fallen below it.
    dropped = ((bottle_up < 0.5) & (s.bottle_pos[:, 2] < 0.05) & ~grasped) | (
        s.bottle_pos[:, 2] < -0.05
    )
    return Progress(
        grasped=grasped,
        lifted=grasped & (s.bottle_pos[:, 2] > 0.03),
        bottle_upright=bottle_up > BOTTLE_UPRIGHT_COS,
        bottle_dropped=dropped,
        cup_upright=up_axis(s.cup_quat) > CUP_UPRIGHT_COS,
        tilt=tilt,
    )


def dense_reward(
    s: TaskState, liq: LiquidState, p: Progress
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Staged dense reward, ``(N,)``: reach, grasp, lift, approach, tilt, poured, spill.

    Stage terms are each in [0, 1] and weighted 0.1; the liquid terms dominate:
    ``r = 0.1 * (reach + grasp + lift + approach + tilt) + poured - spilled``.
    """
    reach = 1.0 - torch.tanh(10.0 * (s.bottle_grasp - s.tcp_pos).norm(dim=-1))
    grasp = p.grasped.float()
    lift = grasp * (s.bottle_pos[:, 2] / 0.10).clamp(0.0, 1.0)
    mouth_to_cup = (s.bottle_mouth[:, :2] - s.cup_rim[:, :2]).norm(dim=-1)
    approach = p.lifted.float() * (1.0 - torch.tanh(10.0 * (mouth_to_cup - 0.05).clamp(min=0)))
    tilt = (p.lifted & (mouth_to_cup < 0.10)).float() * (p.tilt / math.radians(100)).clamp(0, 1)
    terms = {
        "reach": reach,
        "grasp": grasp,
        "lift": lift,
        "approach": approach,
        "tilt": tilt,
        "poured": liq.in_cup,
        "spilled": liq.spilled,
    }
    r = 0.1 * (reach + grasp + lift + approach + tilt) + liq.in_cup - liq.spilled
    return r, terms


def sparse_reward(liq: LiquidState, prev_in_cup: torch.Tensor) -> torch.Tensor:
    """Poured-fraction gain since the previous step, ``(N,)``."""
    return liq.in_cup - prev_in_cup
