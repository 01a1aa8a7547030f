"""Physics backends: they only step physics and report kinematics, nothing task-specific.

``MujocoCPUBackend`` steps N copies of one ``MjModel`` with MuJoCo's own multi-threaded
``mujoco.rollout`` (a persistent C++ thread pool, no Python loop over substeps), then runs
forward kinematics per environment so that the task can read body and site poses.
"""

from __future__ import annotations

import os
from typing import Any

import mujoco
import mujoco.rollout
import numpy as np
import torch

from pourlit.sim.kinematics import Kinematics

_FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS


class MujocoCPUBackend:
    """N independent simulations of ``model`` stepped in parallel on CPU threads.

    Args:
        model: the compiled scene.
        num_envs: N.
        nthread: worker threads for ``mujoco.rollout`` (default: one per core, at most N).
    """

    name = "mujoco"

    def __init__(self, model: mujoco.MjModel, num_envs: int, nthread: int | None = None) -> None:
        self.model = model
        self.num_envs = num_envs
        self.datas = [mujoco.MjData(model) for _ in range(num_envs)]
        cores = os.cpu_count() or 1
        self.nthread = max(1, min(num_envs, nthread or cores))
        self._scratch = [mujoco.MjData(model) for _ in range(self.nthread)]
        self._pool = mujoco.rollout.Rollout(nthread=self.nthread if self.nthread > 1 else 0)
        self._models = [model] * num_envs  # rollout takes one model per simulation
        self.nstate = mujoco.mj_stateSize(model, _FULL)
        self.state = np.zeros((num_envs, self.nstate))
        self.ctrl = np.zeros((num_envs, model.nu))
        self._out: np.ndarray | None = None
        # every env's kinematics, rows written where its MjData changes (_read_kinematics);
        # kinematics() hands out tensors sharing their memory
        n = num_envs
        self._kin_rows = {
            "qpos": np.zeros((n, model.nq)),
            "qvel": np.zeros((n, model.nv)),
            "xpos": np.zeros((n, model.nbody, 3)),
            "xquat": np.zeros((n, model.nbody, 4)),
            "xmat": np.zeros((n, model.nbody, 9)),
            "site_xpos": np.zeros((n, model.nsite, 3)),
            "time": np.zeros(n),
        }
        kin = {name: torch.from_numpy(rows) for name, rows in self._kin_rows.items()}
        kin["xmat"] = kin["xmat"].reshape(n, -1, 3, 3)
        self._kin = Kinematics(**kin)
        self.diverged = torch.zeros(num_envs, dtype=torch.bool)  # per env, set by the last step()
        self._ctrl_seq = np.empty((num_envs, 0, model.nu))
        # An explicit (zero) solver warm start per control step: otherwise each thread's
        # scratch data would carry the warm start of whichever simulation it ran before,
        # making results depend on thread scheduling.
        self._warmstart = np.zeros((num_envs, model.nv))
        for i in range(num_envs):
            self._read_state(i)
            self._read_kinematics(i)

    # -- state -------------------------------------------------------------------------------
    def _read_state(self, i: int) -> None:
        mujoco.mj_getState(self.model, self.datas[i], self.state[i], _FULL)

    def _read_kinematics(self, i: int) -> None:
        d, rows = self.datas[i], self._kin_rows
        rows["qpos"][i] = d.qpos
        rows["qvel"][i] = d.qvel
        rows["xpos"][i] = d.xpos
        rows["xquat"][i] = d.xquat
        rows["xmat"][i] = d.xmat
        rows["site_xpos"][i] = d.site_xpos
        rows["time"][i] = d.time

    def set_state(self, env_ids: np.ndarray, qpos: np.ndarray, ctrl: np.ndarray) -> None:
        """Place environments ``env_ids`` at ``qpos`` (len(ids), nq) at rest, time 0."""
        for k, i in enumerate(env_ids):
            d = self.datas[i]
            mujoco.mj_resetData(self.model, d)
            d.qpos[:] = qpos[k]
            d.ctrl[:] = ctrl[k]
            mujoco.mj_forward(self.model, d)
            self.ctrl[i] = ctrl[k]
            self._read_state(i)
            self._read_kinematics(i)
            self.diverged[int(i)] = False

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything the next ``step`` depends on: full physics state and held controls (as
        tensors, so checkpoints load with ``torch.load(weights_only=True)``)."""
        return {
            "state": torch.from_numpy(self.state.copy()),
            "ctrl": torch.from_numpy(self.ctrl.copy()),
            "diverged": self.diverged.clone(),
        }

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Restore ``state_dict()``; the next ``step`` then equals the saved run's bit for bit."""
        state = sd["state"].numpy().astype(np.float64)
        if state.shape != self.state.shape:
            raise ValueError(
                f"physics state has shape {state.shape}, this backend {self.state.shape} "
                "(different scene or number of envs)"
            )
        self.state[:] = state
        self.ctrl[:] = sd["ctrl"].numpy()
        self.diverged = sd["diverged"].clone().bool()
        self._write_datas()

    def mj_data(self, i: int) -> mujoco.MjData:
        """Environment ``i``'s own ``MjData`` (kinematics up to date)."""
        return self.datas[i]

    # -- stepping ----------------------------------------------------------------------------
    def step(self, ctrl: torch.Tensor, nsub: int) -> None:
        """Hold ``ctrl`` (N, nu) for ``nsub`` physics steps in every environment."""
        self.ctrl[:] = ctrl.numpy()
        if self._out is None or self._out.shape[1] != nsub:
            self._out = np.empty((self.num_envs, nsub, self.nstate))
            self._ctrl_seq = np.empty((self.num_envs, nsub, self.model.nu))
        self._ctrl_seq[:] = self.ctrl[:, None, :]  # zero-order hold over the substeps
        self._pool.rollout(
            self._models,
            self._scratch,
            self.state,
            self._ctrl_seq,
            initial_warmstart=self._warmstart,
            nstep=nsub,
            state=self._out,
            skip_checks=True,
        )
        t0 = self.state[:, 0].copy()  # the state starts with the simulated time
        self.state[:] = self._out[:, -1]
        # MuJoCo resets a diverged simulation (bad qacc) to the model's default pose and stops
        # advancing its clock: time that did not advance by nsub steps marks divergence.
        expected = t0 + (nsub - 0.5) * self.model.opt.timestep
        diverged = (self.state[:, 0] < expected) | ~np.isfinite(self.state).all(axis=1)
        self.diverged = torch.from_numpy(diverged)
        self._write_datas()

    def _write_datas(self) -> None:
        """Put ``state`` and ``ctrl`` into every env's ``MjData`` with its kinematics updated
        (what ``kinematics``, the expert and the renderer read)."""
        for i, d in enumerate(self.datas):
            mujoco.mj_setState(self.model, d, self.state[i], _FULL)
            d.ctrl[:] = self.ctrl[i]
            mujoco.mj_kinematics(self.model, d)
            self._read_kinematics(i)

    def kinematics(self) -> Kinematics:
        """Positions, velocities and poses of every environment: tensors sharing this backend's
        buffers, which the next ``step`` or ``set_state`` overwrites (clone what you keep)."""
        return self._kin

    def close(self) -> None:
        self._pool.close()


BACKENDS = ("mujoco", "mujoco_warp")


def make_backend(
    name: str,
    model: mujoco.MjModel,
    num_envs: int,
    nthread: int | None = None,
    device: str = "cpu",
    nconmax: int | None = None,
    njmax: int | None = None,
) -> Any:
    """The physics backend called ``name``: ``mujoco`` (CPU threads) or ``mujoco_warp``
    (MuJoCo Warp on ``device``: ``cuda[:i]`` or Warp's ``cpu`` device; needs
    ``pip install pourlit[warp]``). ``name`` and ``device`` are checked where the env config is
    built (``EnvConfig``), the one place that lists the valid names."""
    if name == "mujoco":
        return MujocoCPUBackend(model, num_envs, nthread)
    from pourlit.sim.warp_backend import MujocoWarpBackend  # name == "mujoco_warp"

    return MujocoWarpBackend(model, num_envs, device, nconmax, njmax)
