"""Scene construction: the MJCF in ``assets/`` plus the liquid, compiled to an ``MjModel``.

The static scene (robot, table, bottle, cup) lives in ``assets/pouring.xml``; Python only adds
what is configurable: the liquid spheres (count, radius, density). Each sphere is a body with
three slide joints (x, y, z) instead of a free joint: it cannot spin, which is all a liquid
particle needs, and it keeps the solver cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

ASSETS = Path(__file__).parent / "assets"
SCENE_XML = ASSETS / "pouring.xml"

ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3")
FINGER_JOINTS = ("finger_left", "finger_right")

# Vessel geometry, metres (must match assets/pouring.xml).
BOTTLE_HEIGHT = 0.195
BOTTLE_APOTHEM = 0.0325  # outer, flats are 0.065 m apart
BOTTLE_WALL = 0.004
CUP_HEIGHT = 0.08
CUP_RADIUS = 0.05  # outer apothem
CUP_WALL = 0.004
GRIPPER_STROKE = 0.085


@dataclass(frozen=True)
class LiquidConfig:
    """The liquid: ``count`` frictionless spheres of ``radius`` m and ``density`` kg/m^3."""

    count: int = 32
    radius: float = 0.0065
    density: float = 1000.0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"liquid.count must be >= 1, got {self.count}")
        if not 0.003 <= self.radius <= 0.012:
            raise ValueError(f"liquid.radius must be in [0.003, 0.012] m, got {self.radius}")
        if self.density <= 0:
            raise ValueError(f"liquid.density must be > 0, got {self.density}")


def liquid_layout(cfg: LiquidConfig) -> np.ndarray:
    """Initial sphere centres in the bottle frame (origin at the bottom centre), ``(count, 3)``.

    Hexagonal layers, each as many spheres as fit inside the inner wall, stacked from the
    bottom; alternate layers are shifted so spheres nest. Raises ``ValueError`` when the
    spheres do not fit below the bottle's mouth.
    """
    r = cfg.radius
    inner = BOTTLE_APOTHEM - BOTTLE_WALL - r - 0.0008  # clearance to the inner wall
    pitch = 2.0 * r * 1.02
    layer_dz = pitch * math.sqrt(2.0 / 3.0)
    rows: list[np.ndarray] = []
    n_rows = int(inner // pitch) + 2
    for layer in range(10_000):
        shift = (pitch / 2, pitch / (2 * math.sqrt(3))) if layer % 2 else (0.0, 0.0)
        pts = []
        for i in range(-n_rows, n_rows + 1):
            for j in range(-n_rows, n_rows + 1):
                x = (i + 0.5 * j) * pitch + shift[0]
                y = j * pitch * math.sqrt(3) / 2 + shift[1]
                if math.hypot(x, y) <= inner:
                    pts.append((x, y))
        z = 0.006 + r + 0.0005 + layer * layer_dz
        rows.extend(np.array([[x, y, z] for x, y in pts]))
        if len(rows) >= cfg.count:
            break
    pos = np.asarray(rows[: cfg.count])
    top = pos[:, 2].max() + r
    if top > BOTTLE_HEIGHT - 0.01:
        raise ValueError(
            f"{cfg.count} spheres of radius {r} m fill the bottle to {top:.3f} m, above its "
            f"mouth ({BOTTLE_HEIGHT} m); use fewer or smaller spheres"
        )
    return pos


@dataclass(frozen=True)
class SceneIndex:
    """Addresses into ``qpos``/``qvel``/``ctrl`` and ids of bodies and sites of one model."""

    arm_qpos: np.ndarray  # (6,) qpos addresses of the arm joints
    arm_dof: np.ndarray  # (6,) dof addresses
    finger_qpos: np.ndarray  # (2,)
    bottle_qpos: int  # free joint: 7 values from here (pos, quat wxyz)
    bottle_dof: int
    cup_qpos: int
    cup_dof: int
    liquid_qpos: np.ndarray  # (count, 3) slide-joint addresses
    liquid_body0: np.ndarray  # (count, 3) world position of each sphere body at qpos = 0
    liquid_local0: np.ndarray  # (count, 3) initial sphere centres in the bottle frame
    bottle_body: int
    cup_body: int
    tcp_site: int
    bottle_grasp_site: int
    bottle_mouth_site: int
    cup_rim_site: int
    gripper_actuator: int
    bottle_home: np.ndarray  # (3,) bottle body position in the XML (liquid bodies are relative)


def build_model(liquid: LiquidConfig | None = None) -> tuple[mujoco.MjModel, SceneIndex]:
    """Compile the pouring scene with ``liquid`` spheres; returns the model and its index."""
    liquid = liquid or LiquidConfig()
    spec = build_spec(liquid)
    model = spec.compile()
    return model, _index(model, liquid)


def build_spec(liquid: LiquidConfig) -> mujoco.MjSpec:
    """The ``MjSpec`` of the full scene (``spec.to_xml()`` gives a viewer-ready MJCF)."""
    spec = mujoco.MjSpec.from_file(str(SCENE_XML))
    home = np.array(spec.body("bottle").pos, dtype=float)
    for k, p in enumerate(liquid_layout(liquid)):
        body = spec.worldbody.add_body(name=f"liquid{k:03d}", pos=(home + p).tolist())
        for axis, name in ((1, 0, 0), "x"), ((0, 1, 0), "y"), ((0, 0, 1), "z"):
            body.add_joint(
                name=f"liquid{k:03d}_{name}", type=mujoco.mjtJoint.mjJNT_SLIDE, axis=list(axis)
            )
        body.add_geom(
            name=f"liquid{k:03d}",
            type=mujoco.mjtGeom.mjGEOM_SPHERE,
            size=[liquid.radius, 0, 0],
            density=liquid.density,
            condim=1,
            priority=1,
            contype=2,
            conaffinity=7,
            rgba=[0.15, 0.4, 0.95, 1.0],
        )
    return spec


def _index(model: mujoco.MjModel, liquid: LiquidConfig) -> SceneIndex:
    def jq(name: str) -> int:
        return int(model.jnt_qposadr[model.joint(name).id])

    def jd(name: str) -> int:
        return int(model.jnt_dofadr[model.joint(name).id])

    local0 = liquid_layout(liquid)
    liquid_qpos = np.array(
        [[jq(f"liquid{k:03d}_{a}") for a in "xyz"] for k in range(liquid.count)], dtype=np.int64
    )
    body0 = np.array([model.body(f"liquid{k:03d}").pos for k in range(liquid.count)])
    return SceneIndex(
        arm_qpos=np.array([jq(j) for j in ARM_JOINTS]),
        arm_dof=np.array([jd(j) for j in ARM_JOINTS]),
        finger_qpos=np.array([jq(j) for j in FINGER_JOINTS]),
        bottle_qpos=jq("bottle"),
        bottle_dof=jd("bottle"),
        cup_qpos=jq("cup"),
        cup_dof=jd("cup"),
        liquid_qpos=liquid_qpos,
        liquid_body0=body0,
        liquid_local0=local0,
        bottle_body=model.body("bottle").id,
        cup_body=model.body("cup").id,
        tcp_site=model.site("tcp").id,
        bottle_grasp_site=model.site("bottle_grasp").id,
        bottle_mouth_site=model.site("bottle_mouth").id,
        cup_rim_site=model.site("cup_rim").id,
        gripper_actuator=model.actuator("gripper").id,
        bottle_home=np.array(model.body("bottle").pos),
    )
