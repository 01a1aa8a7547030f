"""Damped least-squares inverse kinematics for the UR3's tool centre point (TCP)."""

from __future__ import annotations

import mujoco
import numpy as np


def rotation_error(r_des: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Axis-angle vector (3,) rotating ``r`` onto ``r_des`` (both 3x3, world frame)."""
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, (r_des @ r.T).ravel())
    if q[0] < 0:
        q = -q
    v = np.empty(3)
    mujoco.mju_quat2Vel(v, q, 1.0)
    return v


class DampedLeastSquaresIK:
    """Joint angles that put site ``site`` at a target pose, by damped least squares.

    ``dq = J^T (J J^T + lambda^2 I)^-1 e`` with ``e`` = (position error, rotation error), iterated
    from a seed configuration so that solutions stay on the seed's branch (no wrist flips).

    Args:
        model: the scene; a private ``MjData`` is used for the kinematics.
        site: name of the site to place (the TCP).
        arm_qpos / arm_dof: qpos / dof addresses of the 6 arm joints.
        damping: lambda (the seed project used 0.05).
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        site: str,
        arm_qpos: np.ndarray,
        arm_dof: np.ndarray,
        damping: float = 0.05,
    ) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.site = model.site(site).id
        self.arm_qpos = arm_qpos
        self.arm_dof = arm_dof
        self.damping = damping
        self._jp = np.zeros((3, model.nv))
        self._jr = np.zeros((3, model.nv))

    def forward(self, qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Site position (3,) and rotation matrix (3, 3) at full ``qpos``."""
        d = self.data
        d.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, d)
        return d.site_xpos[self.site].copy(), d.site_xmat[self.site].reshape(3, 3).copy()

    def solve(
        self,
        qpos: np.ndarray,
        pos: np.ndarray,
        rot: np.ndarray,
        iterations: int = 20,
        tol: float = 1e-4,
        max_step: float = 0.2,
    ) -> tuple[np.ndarray, float]:
        """Arm angles (6,) reaching ``pos``/``rot`` from the full configuration ``qpos``.

        Returns the angles and the final error norm (m and rad mixed, 0 when exact).
        """
        d = self.data
        d.qpos[:] = qpos
        q = qpos[self.arm_qpos].copy()
        err = np.inf
        for _ in range(iterations):
            d.qpos[self.arm_qpos] = q
            mujoco.mj_kinematics(self.model, d)
            mujoco.mj_comPos(self.model, d)
            e = np.concatenate(
                [
                    pos - d.site_xpos[self.site],
                    rotation_error(rot, d.site_xmat[self.site].reshape(3, 3)),
                ]
            )
            err = float(np.linalg.norm(e))
            if err < tol:
                break
            mujoco.mj_jacSite(self.model, d, self._jp, self._jr, self.site)
            jac = np.vstack([self._jp[:, self.arm_dof], self._jr[:, self.arm_dof]])
            lam2 = self.damping**2
            dq = jac.T @ np.linalg.solve(jac @ jac.T + lam2 * np.eye(6), e)
            q += np.clip(dq, -max_step, max_step)
        return q, err
