"""What every physics backend reports after a step: the one small interface between the
backends (``pourlit.sim.backends``, ``pourlit.sim.warp_backend``) and the task code."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Kinematics:
    """Tensors a task reads after a step, leading dim N (environments), on the backend's device
    (float64 on the CPU backend, float32 on MuJoCo Warp). Valid until the backend's next step or
    reset: the CPU backend's share its buffers, which those overwrite."""

    qpos: torch.Tensor  # (N, nq)
    qvel: torch.Tensor  # (N, nv)
    xpos: torch.Tensor  # (N, nbody, 3) body positions, world frame
    xquat: torch.Tensor  # (N, nbody, 4) body orientations, wxyz
    xmat: torch.Tensor  # (N, nbody, 3, 3) body rotation matrices (columns: body axes in world)
    site_xpos: torch.Tensor  # (N, nsite, 3)
    time: torch.Tensor  # (N,) simulated seconds since reset
