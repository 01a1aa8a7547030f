"""The pouring task, written once: observation, liquid state, reward, success.

Everything here takes batched arrays (leading dim N = environments), numpy arrays or torch
tensors on any device (``pourlit.sim.arrays``: the env computes in numpy on the CPU and in torch
on an accelerator), so every physics backend shares it; results come back in the library of
the inputs. Quaternions are (w, x, y, z).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pourlit.sim.arrays import Array, astype, const, namespace
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
# Hamilton product as a bilinear form: (a * b)_i = sum_jk a_j b_k H[j, k, i], rows j, k in
# (w, x, y, z) order; H holds the signs of (w1 w2 - v1.v2, w1 v2 + w2 v1 + v1 x v2).
_HAMILTON = (
    # b:  w              x               y               z
    ((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)),  # a_w
    ((0, 1, 0, 0), (-1, 0, 0, 0), (0, 0, 0, 1), (0, 0, -1, 0)),  # a_x
    ((0, 0, 1, 0), (0, 0, 0, -1), (-1, 0, 0, 0), (0, 1, 0, 0)),  # a_y
    ((0, 0, 0, 1), (0, 0, 1, 0), (0, -1, 0, 0), (-1, 0, 0, 0)),  # a_z
)
_HAMILTON_FLAT = tuple(row for a_row in _HAMILTON for row in a_row)  # (16, 4)


def quat_mul(a: Array, b: Array) -> Array:
    """Hamilton product ``a * b`` of quaternions (..., 4): (w1 w2 - v1.v2, w1 v2 + w2 v1 +
    v1 x v2), computed as one outer product and one matrix product (``_HAMILTON``)."""
    outer = a[..., :, None] * b[..., None, :]
    outer = outer.reshape((*outer.shape[:-2], 16))  # (..., 16): a_j b_k
    return outer @ const(_HAMILTON_FLAT, outer)


def quat_conj(q: Array) -> Array:
    return q * const((1.0, -1.0, -1.0, -1.0), q)


def quat_canonical(q: Array) -> Array:
    """The sign of ``q`` with w >= 0 (q and -q are the same rotation)."""
    return namespace(q).where(q[..., :1] < 0, -q, q)


def up_axis(q: Array) -> Array:
    """World z component of the body's z axis (cosine of its tilt from vertical):
    1 - 2 (x^2 + y^2)."""
    xy = q[..., 1:3]
    return 1.0 - 2.0 * (xy * xy).sum(-1)


# -- state the task reads ----------------------------------------------------------------------
@dataclass
class TaskState:
    """Task-relevant quantities of N environments (arrays, leading dim N)."""

    arm_q: Array  # (N, 6) rad
    arm_qd: Array  # (N, 6) rad/s
    opening: Array  # (N,) jaw opening, m
    tcp_pos: Array  # (N, 3)
    tcp_quat: Array  # (N, 4)
    bottle_pos: Array  # (N, 3)
    bottle_quat: Array  # (N, 4)
    cup_pos: Array  # (N, 3)
    cup_quat: Array  # (N, 4)
    bottle_rot: Array  # (N, 3, 3) rotation matrix of the bottle frame
    cup_rot: Array  # (N, 3, 3)
    bottle_grasp: Array  # (N, 3) grasp point on the bottle axis, world
    bottle_mouth: Array  # (N, 3)
    cup_rim: Array  # (N, 3) centre of the cup's rim
    liquid: Array  # (N, M, 3) sphere centres, world


@dataclass
class LiquidState:
    in_bottle: Array  # (N,) fractions in [0, 1]
    in_cup: Array
    spilled: Array


def liquid_state(s: TaskState) -> LiquidState:
    """Fractions of spheres inside the bottle, inside the cup, and spilled on the table.

    A sphere at ``p`` is inside vessel k (position ``c``, rotation ``R``, radius ``r_k``, height
    ``h_k``) when ``l = (p - c) R`` (p in the vessel's frame) has ``|l_xy| < r_k`` and
    ``0 < l_z < h_k``; spilled when inside neither and below ``SPILL_HEIGHT``.
    """
    # Both vessels at once (k = 0 bottle, 1 cup). Row vectors: (p - pos) @ R expresses p in
    # the frame whose axes are R's columns.
    xp = namespace(s.liquid)
    pos = xp.stack((s.bottle_pos, s.cup_pos), axis=1)  # (N, 2, 3)
    rot = xp.stack((s.bottle_rot, s.cup_rot), axis=1)  # (N, 2, 3, 3)
    local = (s.liquid[:, None] - pos[:, :, None]) @ rot  # (N, 2, M, 3)
    radius = const(((BOTTLE_APOTHEM,), (CUP_RADIUS - CUP_WALL,)), local)  # (2, 1)
    height = const(((BOTTLE_HEIGHT,), (CUP_HEIGHT,)), local)
    z = local[..., 2]
    inside = (xp.hypot(local[..., 0], local[..., 1]) < radius) & (z > 0) & (z < height)
    spilled = ~inside.any(axis=1, keepdims=True) & (s.liquid[:, None, :, 2] < SPILL_HEIGHT)
    # (N, 3): in bottle, in cup, spilled
    counts = astype(xp.concat((inside, spilled), axis=1), local.dtype).sum(axis=-1)
    fractions = counts / s.liquid.shape[1]
    return LiquidState(in_bottle=fractions[:, 0], in_cup=fractions[:, 1], spilled=fractions[:, 2])


def observation(s: TaskState, liq: LiquidState) -> Array:
    """The observation vector, ``(N, OBS_DIM)`` float32, in the order of ``OBS_NAMES``."""
    xp = namespace(s.arm_q)
    rel_quat = quat_mul(quat_conj(s.tcp_quat), s.bottle_quat)
    quats = xp.stack((s.tcp_quat, s.bottle_quat, s.cup_quat, rel_quat), axis=1)
    quats = quat_canonical(quats)
    tcp_quat, bottle_quat, cup_quat, rel_quat = (quats[:, k] for k in range(4))
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
        s.liquid.sum(axis=1) / s.liquid.shape[1],  # centroid
        s.bottle_grasp - s.tcp_pos,
        rel_quat,
        astype(xp.stack((liq.in_bottle, liq.in_cup, liq.spilled), axis=-1), s.arm_q.dtype),
    ]
    return astype(xp.concat(parts, axis=-1), xp.float32)


@dataclass
class Progress:
    """Per-environment task flags, (N,) bool tensors, and the measures they come from."""

    grasped: Array
    lifted: Array
    bottle_upright: Array
    bottle_dropped: Array
    cup_upright: Array
    tilt: Array  # bottle tilt from vertical, rad (float)
    grasp_distance: Array  # |bottle_grasp - tcp_pos|, m (float)


def progress(s: TaskState) -> Progress:
    """Grasped: the tcp within 3 cm of the bottle's grasp point, the jaws closed to 50-70 mm;
    lifted: grasped with the bottle's base above 3 cm; upright: the body's z axis within
    30 deg of vertical; dropped: lying on the table (tilted over 60 deg, base below 5 cm, not
    grasped) or fallen below it."""
    xp = namespace(s.bottle_quat)
    up = up_axis(xp.stack((s.bottle_quat, s.cup_quat), axis=1))  # (N, 2)
    upright = up > const((BOTTLE_UPRIGHT_COS, CUP_UPRIGHT_COS), up)
    bottle_up = up[:, 0]
    tilt = xp.arccos(bottle_up.clip(-1.0, 1.0))
    offset = s.bottle_grasp - s.tcp_pos
    distance = xp.sqrt((offset * offset).sum(axis=-1))
    grasped = (distance < 0.03) & (s.opening > 0.050) & (s.opening < 0.070)
    z = s.bottle_pos[:, 2]
    dropped = ((bottle_up < 0.5) & (z < 0.05) & ~grasped) | (z < -0.05)
    return Progress(
        grasped=grasped,
        lifted=grasped & (z > 0.03),
        bottle_upright=upright[:, 0],
        bottle_dropped=dropped,
        cup_upright=upright[:, 1],
        tilt=tilt,
        grasp_distance=distance,
    )


def dense_reward(s: TaskState, liq: LiquidState, p: Progress) -> tuple[Array, dict[str, Array]]:
    """Staged dense reward, ``(N,)``: reach, grasp, lift, approach, tilt, poured, spill.

    Stage terms are each in [0, 1] and weighted 0.1; the liquid terms dominate:
    ``r = 0.1 * (reach + grasp + lift + approach + tilt) + poured - spilled``.
    """
    xp = namespace(p.grasp_distance)
    reach = 1.0 - xp.tanh(10.0 * p.grasp_distance)
    grasp = astype(p.grasped, xp.float32)
    lift = grasp * (s.bottle_pos[:, 2] / 0.10).clip(0.0, 1.0)
    mouth_offset = s.bottle_mouth - s.cup_rim
    mouth_to_cup = xp.hypot(mouth_offset[:, 0], mouth_offset[:, 1])  # horizontal distance
    approach = astype(p.lifted, xp.float32) * (
        1.0 - xp.tanh(10.0 * (mouth_to_cup - 0.05).clip(min=0.0))
    )
    near_cup = p.lifted & (mouth_to_cup < 0.10)
    tilt = astype(near_cup, xp.float32) * (p.tilt / math.radians(100)).clip(0.0, 1.0)
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


def sparse_reward(liq: LiquidState, prev_in_cup: Array) -> Array:
    """Poured-fraction gain since the previous step, ``(N,)``."""
    return liq.in_cup - prev_in_cup
