"""MuJoCo Warp physics backend: N worlds of the same scene stepped as one batch on a GPU (or
Warp's CPU device), state exposed as zero-copy torch tensors on that device.

It implements the same small interface as ``MujocoCPUBackend`` (``set_state``, ``step``,
``kinematics``, ``diverged``, ``state_dict``, ``mj_data``), so ``PouringVecEnv``
and the task code (observation, reward, success on torch tensors) are shared between the two.

- One control step = ``nsub`` calls of ``mujoco_warp.step`` recorded once in a Warp graph
  (``wp.ScopedCapture``) and replayed with ``wp.capture_launch``: no Python per physics step,
  no host copies per step (controls are written in place into the captured ``d.ctrl``).
- Contact and constraint buffers are sized from the scene (``contact_budget``): MuJoCo Warp's
  defaults ignore the liquid spheres and are far too small, and the contact pool is shared by
  all worlds, so one world overflowing silently steals contacts from the others. Every step
  checks MuJoCo Warp's per-world overflow bitmask and raises ``ContactOverflowError`` naming
  the worlds and buffers.
- Divergence: MuJoCo Warp does not reset a diverged world as C MuJoCo does; a world whose
  ``qpos`` or ``qvel`` is not finite is reported in ``diverged`` (the task ends it as unstable).
- Float32 on the device (C MuJoCo: float64); parity with the CPU backend is tested on Warp's
  CPU device (tests/test_warp_backend.py).

Install with ``pip install pourlit[warp]`` (package ``mujoco-warp``).
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np
import torch

from pourlit.sim.kinematics import Kinematics

# MuJoCo Warp overflow bits that mean lost contacts or constraints (ITERATIONS is only the
# solver's iteration limit and is not an error).
_BUFFER_BITS = ("NEFC", "NJMAX_NNZ", "BROADPHASE", "NARROWPHASE", "CCD", "NVMAX", "EPA_HORIZON")


class ContactOverflowError(RuntimeError):
    """A world needed more contacts or constraint rows than the buffers hold."""


def _import_warp() -> tuple[Any, Any]:
    try:
        import warp as wp

        wp.config.log_level = max(wp.config.log_level, wp.LOG_WARNING)  # no module-load lines
        import mujoco_warp as mjw
    except ImportError as e:
        raise ImportError(
            "env.backend 'mujoco_warp' needs MuJoCo Warp: pip install 'pourlit[warp]' "
            f"({e.name} is not installed)"
        ) from e
    return wp, mjw


def contact_budget(model: mujoco.MjModel) -> tuple[int, int]:
    """(nconmax, njmax) per world for ``model``, from what can touch at once.

    Every free or sliding body (liquid sphere, bottle, cup, finger) can rest on at most ~6
    neighbours or walls; the robot adds up to 8 contacts per other geom, counted for 8 geoms:
    nconmax = 1.25 (6 movable + 64), rounded up to 32. Constraint rows: 2 per contact (the
    liquid is frictionless, condim 1; the pads' condim-4 contacts are few) plus equality and
    joint-limit rows. The default scene (32 spheres) gets 352 contacts and 832 rows, against
    at most 139 contacts and 176 rows measured over a whole expert pour; the per-step overflow
    check catches a scene this estimate does not cover.
    """
    movable = 0
    for b in range(model.nbody):
        jnt = model.body_jntnum[b]
        free_or_slide = (int(mujoco.mjtJoint.mjJNT_FREE), int(mujoco.mjtJoint.mjJNT_SLIDE))
        if jnt and int(model.jnt_type[model.body_jntadr[b]]) in free_or_slide:
            movable += 1
    other = max(0, int(model.ngeom) - movable)
    nconmax = int(1.25 * (6 * movable + 8 * min(other, 8)))
    nconmax = int(np.ceil(nconmax / 32) * 32)
    njmax = 2 * nconmax + 8 * int(model.neq) + int(model.njnt)
    njmax = int(np.ceil(njmax / 32) * 32)
    return nconmax, njmax


def check_interpenetration(model: mujoco.MjModel, qpos: np.ndarray, tol: float = 5e-3) -> None:
    """Raise ``ValueError`` if geoms overlap by more than ``tol`` metres at ``qpos``.

    MuJoCo Warp freezes worlds that start deeply interpenetrating (huge contact forces, then
    NaN); C MuJoCo only jolts them. Checked with C MuJoCo's collision on the host. The default
    5 mm admits the reset distribution's mildest overlaps (measured: arm noise can put the open
    pad 2.7 mm into the bottle wall; such a world steps normally on MuJoCo Warp).
    """
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_forward(model, data)
    worst = [(c.dist, c.geom1, c.geom2) for c in data.contact[: data.ncon] if c.dist < -tol]
    if worst:
        dist, g1, g2 = min(worst)
        n1 = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g1) or f"geom {g1}"
        n2 = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g2) or f"geom {g2}"
        raise ValueError(
            f"initial state interpenetrates: {n1} and {n2} overlap by {-dist * 1000:.1f} mm "
            f"({len(worst)} contact(s) deeper than {tol * 1000:.1f} mm); MuJoCo Warp would "
            "freeze this world"
        )


class MujocoWarpBackend:
    """N worlds of ``model`` in MuJoCo Warp on ``device`` (``cuda[:i]`` or ``cpu``).

    Args:
        model: the compiled scene (C MuJoCo model, converted with ``mujoco_warp.put_model``).
        num_envs: N worlds.
        device: torch/Warp device name.
        nconmax / njmax: contacts / constraint rows per world (default: ``contact_budget``).
    """

    name = "mujoco_warp"

    def __init__(
        self,
        model: mujoco.MjModel,
        num_envs: int,
        device: str = "cuda",
        nconmax: int | None = None,
        njmax: int | None = None,
    ) -> None:
        wp, mjw = _import_warp()
        self.wp, self.mjw = wp, mjw
        self.model, self.num_envs = model, num_envs
        tdev = torch.device(device)
        if tdev.type == "cuda":
            self.wp_device = f"cuda:{tdev.index or 0}"
        elif tdev.type == "cpu":
            self.wp_device = "cpu"
        else:
            raise ValueError(f"mujoco_warp runs on cuda or cpu, not {device!r}")
        self.device = (
            torch.device("cpu") if self.wp_device == "cpu" else torch.device(self.wp_device)
        )
        budget = contact_budget(model)
        self.nconmax = int(nconmax or budget[0])
        self.njmax = int(njmax or budget[1])
        host = mujoco.MjData(model)
        mujoco.mj_forward(model, host)
        with wp.ScopedDevice(self.wp_device):
            self.m = mjw.put_model(model)
            self.m.opt.warn_overflow = False  # reported by _check_overflow instead of printf
            self.d = mjw.put_data(
                model, host, nworld=num_envs, nconmax=self.nconmax, njmax=self.njmax
            )
        t = wp.to_torch
        d = self.d
        self._qpos, self._qvel, self._ctrl = t(d.qpos), t(d.qvel), t(d.ctrl)
        self._act, self._time = t(d.act), t(d.time)
        self._warmstart = t(d.qacc_warmstart)
        self._xpos, self._xquat, self._xmat = t(d.xpos), t(d.xquat), t(d.xmat)
        self._site_xpos, self._overflow = t(d.site_xpos), t(d.overflow)
        self._graphs: dict[int, Any] = {}
        self._host: dict[int, mujoco.MjData] = {}
        self._host_state: tuple[np.ndarray, ...] | None = None  # mj_data's per-step copy
        self.diverged = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self._kin: Kinematics | None = None

    # -- state -------------------------------------------------------------------------------
    def set_state(self, env_ids: np.ndarray, qpos: np.ndarray, ctrl: np.ndarray) -> None:
        """Place worlds ``env_ids`` at ``qpos`` (len(ids), nq) at rest, time 0, holding ``ctrl``."""
        for q in qpos:
            check_interpenetration(self.model, q)
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[np.asarray(env_ids)] = True
        wp = self.wp
        with wp.ScopedDevice(self.wp_device):
            self.mjw.reset_data(self.m, self.d, reset=wp.array(mask, dtype=bool))
            ids = torch.as_tensor(np.asarray(env_ids), device=self.device)
            self._qpos[ids] = torch.as_tensor(qpos, dtype=self._qpos.dtype, device=self.device)
            self._ctrl[ids] = torch.as_tensor(ctrl, dtype=self._ctrl.dtype, device=self.device)
            self.mjw.kinematics(self.m, self.d)
        self.diverged[ids] = False
        self._kin = None
        self._host_state = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        keys = ("qpos", "qvel", "act", "ctrl", "time", "warmstart")
        return {k: getattr(self, f"_{k}").cpu().clone() for k in keys} | {
            "diverged": self.diverged.cpu().clone()
        }

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        if tuple(sd["qpos"].shape) != tuple(self._qpos.shape):
            raise ValueError(
                f"physics state has shape {tuple(sd['qpos'].shape)}, this backend "
                f"{tuple(self._qpos.shape)} (different scene or number of envs)"
            )
        for k in ("qpos", "qvel", "act", "ctrl", "time", "warmstart"):
            getattr(self, f"_{k}").copy_(sd[k])
        self.diverged = sd["diverged"].to(self.device).clone()
        with self.wp.ScopedDevice(self.wp_device):
            self.mjw.kinematics(self.m, self.d)
        self._kin = None
        self._host_state = None

    # -- stepping ----------------------------------------------------------------------------
    def _graph(self, nsub: int) -> Any:
        """The captured ``nsub`` physics steps (compiled on a scratch world first: capturing
        must not be the first launch, and compiling must not advance the real worlds)."""
        if nsub not in self._graphs:
            wp, mjw = self.wp, self.mjw
            with wp.ScopedDevice(self.wp_device):
                scratch = mjw.put_data(
                    self.model, mujoco.MjData(self.model), nworld=1,
                    nconmax=self.nconmax, njmax=self.njmax,
                )  # fmt: skip
                mjw.step(self.m, scratch)  # compiles every kernel a step launches
                with wp.ScopedCapture(device=self.wp_device) as cap:
                    for _ in range(nsub):
                        mjw.step(self.m, self.d)
            self._graphs[nsub] = cap.graph
        return self._graphs[nsub]

    def step(self, ctrl: torch.Tensor, nsub: int) -> None:
        """Hold ``ctrl`` (N, nu) for ``nsub`` physics steps in every world."""
        graph = self._graph(nsub)
        self._ctrl.copy_(ctrl)
        self.wp.capture_launch(graph)
        finite = torch.isfinite(self._qpos).all(1) & torch.isfinite(self._qvel).all(1)
        self.diverged = ~finite
        self._kin = None
        self._host_state = None
        self._check_overflow()

    def _check_overflow(self) -> None:
        bits = 0
        for name in _BUFFER_BITS:
            flag = getattr(self.mjw.OverflowType, name, None)
            if flag is not None:
                bits |= int(flag)
        bad = (self._overflow & bits) != 0
        if bool(bad.any()):  # one host sync per control step
            worlds = bad.nonzero().flatten().tolist()
            first = int(self._overflow[worlds[0]])
            kinds = [n for n in _BUFFER_BITS if first & int(getattr(self.mjw.OverflowType, n, 0))]
            raise ContactOverflowError(
                f"MuJoCo Warp buffer overflow ({', '.join(kinds)}) in world(s) "
                f"{worlds[:10]}{' ...' if len(worlds) > 10 else ''} with nconmax={self.nconmax}, "
                f"njmax={self.njmax} per world; contacts would be lost. Raise env.nconmax / "
                "env.njmax"
            )

    def kinematics(self) -> Kinematics:
        if self._kin is None:
            self._kin = Kinematics(
                qpos=self._qpos.clone(),
                qvel=self._qvel.clone(),
                xpos=self._xpos.clone(),
                xquat=self._xquat.clone(),
                xmat=self._xmat.clone().reshape(self.num_envs, -1, 3, 3),
                site_xpos=self._site_xpos.clone(),
                time=self._time.clone(),
            )
        return self._kin

    # -- host access (expert, rendering): copies, not for the hot path ------------------------
    def mj_data(self, i: int) -> mujoco.MjData:
        """A host ``MjData`` with world ``i``'s positions, velocities, controls and kinematics
        (a copy). All worlds' state comes to the host in one transfer per step, shared by
        every ``mj_data`` call until the next step, so a per-env expert costs O(N) per step."""
        if self._host_state is None:
            self._host_state = tuple(
                x.detach().to("cpu", torch.float64).numpy()
                for x in (self._qpos, self._qvel, self._ctrl, self._time)
            )
        qpos, qvel, ctrl, time_ = self._host_state
        data = self._host.setdefault(i, mujoco.MjData(self.model))
        data.qpos[:], data.qvel[:], data.ctrl[:] = qpos[i], qvel[i], ctrl[i]
        data.time = float(time_[i])
        mujoco.mj_kinematics(self.model, data)
        return data

    def close(self) -> None:
        self._graphs.clear()
