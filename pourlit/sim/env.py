"""The vectorised pouring environment, Isaac Gym VecTask style: tensors in and out, auto-reset.

    env = PouringVecEnv(EnvConfig(num_envs=4))
    obs = env.reset(seed=0)                                   # (N, OBS_DIM) float32
    obs, reward, terminated, truncated, info = env.step(actions)   # actions (N, 7) in [-1, 1]

An environment whose episode ended is reset inside ``step``; the observation returned for it
is the first of its new episode, and its last observation is in ``info["final_obs"]``.
Termination (success, bottle dropped, cup tipped, unstable physics) and truncation (time limit)
are kept apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import mujoco
import numpy as np
import torch

from pourlit.sim import arrays, task
from pourlit.sim.backends import BACKENDS, make_backend
from pourlit.sim.scene import ARM_JOINTS, GRIPPER_STROKE, LiquidConfig, build_model

HOME_POSE_DEG = (0.0, -80.0, -115.0, -165.0, -90.0, 0.0)  # the seed project's start pose


@dataclass(frozen=True)
class RandomisationConfig:
    """Reset ranges (m, rad). Bottle and cup positions are world coordinates, robot base at the
    origin, x forward. The seed's bottle range (x 0.55 +- 0.065, y +-0.2) lies at the edge of the
    UR3's reach, so pourlit shrinks it to where a horizontal grasp is reachable (see README)."""

    bottle_x: tuple[float, float] = (0.40, 0.50)
    bottle_y: tuple[float, float] = (-0.10, 0.10)
    bottle_yaw: tuple[float, float] = (-math.pi / 2, math.pi / 2)
    cup_x: tuple[float, float] = (0.38, 0.46)
    cup_side_offset: tuple[float, float] = (0.22, 0.28)  # |y_cup - y_bottle|, side is random
    cup_yaw: tuple[float, float] = (-math.pi, math.pi)
    arm_noise: float = math.radians(3.0)  # uniform noise on each home-pose joint, rad


@dataclass(frozen=True)
class EnvConfig:
    """Everything that defines the pouring environment; stored with every rollout file."""

    num_envs: int = 1
    backend: str = "mujoco"
    device: str = "cpu"
    nthread: int | None = None  # physics threads (None: one per core)
    nconmax: int | None = None  # mujoco_warp: contacts per world (None: sized from the scene)
    njmax: int | None = None  # mujoco_warp: constraint rows per world (None: from the scene)
    liquid: LiquidConfig = field(default_factory=LiquidConfig)
    randomisation: RandomisationConfig = field(default_factory=RandomisationConfig)
    control_substeps: int = 20  # physics steps (2 ms) per control step -> 25 Hz
    max_episode_steps: int = 500
    arm_step: float = 0.04  # rad of joint-target change per control step at |action| = 1
    gripper_step: float = 0.01  # m of jaw-target change per control step at |action| = 1
    reward: str = "dense"  # one of pourlit.sim.task.REWARDS
    success_threshold: float = 0.8  # poured fraction needed for success
    max_joint_speed: float = 100.0  # |qvel| above this (rad/s or m/s) counts as unstable

    def __post_init__(self) -> None:
        if self.num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {self.num_envs}")
        if self.control_substeps < 1 or self.max_episode_steps < 1:
            raise ValueError("control_substeps and max_episode_steps must be >= 1")
        if self.reward not in task.REWARDS:
            raise ValueError(f"env.reward must be one of {task.REWARDS}, got {self.reward!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"env.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "mujoco" and not str(self.device).startswith("cpu"):
            raise ValueError(
                f"env.device {self.device!r} needs env.backend: mujoco_warp ('mujoco' is CPU only)"
            )
        if not 0.0 < self.success_threshold <= 1.0:
            raise ValueError(f"success_threshold must be in (0, 1], got {self.success_threshold}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def merged(cls, *layers: dict | None, num_envs: int | None = None) -> EnvConfig:
        """The one way pourlit builds an env config from stored settings and overrides: the
        dicts in ``layers`` (None skipped) are merged left to right, later keys winning (e.g.
        a checkpoint's stored env config, then a run's ``env`` overrides), then ``num_envs``
        when given; unknown keys and bad values raise ``ValueError`` naming them."""
        d: dict = {}
        for layer in layers:
            d.update(layer or {})
        if num_envs is not None:
            d["num_envs"] = num_envs
        return cls.from_dict(d)

    @classmethod
    def from_dict(cls, d: dict) -> EnvConfig:
        """Build from a (YAML/JSON) dict; unknown keys raise ``ValueError`` naming them."""
        d = dict(d)
        sub = {"liquid": LiquidConfig, "randomisation": RandomisationConfig}
        for key, typ in sub.items():
            if key in d and isinstance(d[key], dict):
                _check_keys(typ, d[key], f"env.{key}")
                v = dict(d[key])
                for f in fields(typ):
                    if f.name in v and isinstance(v[f.name], list):
                        v[f.name] = tuple(v[f.name])
                d[key] = typ(**v)
        _check_keys(cls, d, "env")
        return cls(**d)


def _check_keys(typ: type, d: dict, where: str) -> None:
    known = {f.name for f in fields(typ)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(sorted(known))}"
        )


class PouringVecEnv:
    """N pouring environments stepped together; see the module docstring for the API."""

    obs_names = task.OBS_NAMES
    action_names = task.ACTION_NAMES

    def __init__(self, cfg: EnvConfig | None = None, *, autoreset: bool = True) -> None:
        self.cfg = cfg or EnvConfig()
        self.num_envs = self.cfg.num_envs
        self.autoreset = autoreset
        self.device = torch.device(self.cfg.device)
        self.model, self.idx = build_model(self.cfg.liquid)
        self.backend = make_backend(
            self.cfg.backend, self.model, self.num_envs, self.cfg.nthread, self.cfg.device,
            nconmax=self.cfg.nconmax, njmax=self.cfg.njmax,
        )  # fmt: skip
        self._tool_body = self.model.body("tool0").id
        self.obs_dim = task.OBS_DIM
        self.action_dim = len(task.ACTION_NAMES)
        n = self.num_envs
        arm_ids = [self.model.joint(j).id for j in ARM_JOINTS]
        # Per-step state lives on the env's device (no host copies per step on a GPU backend)
        # as arrays of the library of its per-step arithmetic (pourlit.sim.arrays: numpy on
        # the CPU, torch tensors elsewhere); what the env hands out is torch (zero-copy views
        # on the CPU). Episode seeds and their generators live on the host (used at resets).
        dev, f64 = self.device, torch.float64
        self.arm_lo = torch.as_tensor(self.model.jnt_range[arm_ids, 0], dtype=f64, device=dev)
        self.arm_hi = torch.as_tensor(self.model.jnt_range[arm_ids, 1], dtype=f64, device=dev)
        self._xp = xp = arrays.for_device(dev)
        # control targets, one row per env: 6 arm joint angles (rad), then the jaw opening (m)
        self._target = self._array(np.tile([0.0] * 6 + [GRIPPER_STROKE], (n, 1)), xp.float64)
        steps = [self.cfg.arm_step] * 6 + [self.cfg.gripper_step]
        self._action_scale = self._array(steps, xp.float64)
        self._target_lo = self._array([*self.arm_lo.tolist(), 0.0], xp.float64)
        self._target_hi = self._array([*self.arm_hi.tolist(), GRIPPER_STROKE], xp.float64)
        self._step = self._array(np.zeros(n), xp.int64)  # control steps into the episode
        self.episode_seed = np.zeros(n, dtype=np.int64)
        self._seed = self._array(np.zeros(n), xp.int64)  # episode_seed on the device
        self._return = self._array(np.zeros(n), xp.float64)
        self._rngs: list[np.random.Generator] = [np.random.default_rng(i) for i in range(n)]
        self._prev_in_cup = self._array(np.zeros(n), xp.float64)
        self._prev_potential = self._array(np.zeros(n), xp.float64)  # "shaped" reward
        self._liquid_body0 = self._array(self.idx.liquid_body0, xp.float64)
        self._gather_indices()
        self.stats = {"episodes": 0, "successes": 0, "unstable": 0, "env_steps": 0}
        self._obs: Any = None  # the current observations (an array of library _xp)

    def _array(self, x: Any, dtype: Any = None) -> Any:
        """A new array of the env's per-step library holding ``x``, on its device."""
        return arrays.asarray(x, self._xp, dtype, self.device)

    @property
    def arm_target(self) -> torch.Tensor:
        """(N, 6) current joint-position targets of the arm, rad."""
        return arrays.to_torch(self._target)[:, :6]

    @property
    def grip_target(self) -> torch.Tensor:
        """(N,) current jaw-opening targets, m."""
        return arrays.to_torch(self._target)[:, 6]

    @property
    def episode_step(self) -> torch.Tensor:
        """(N,) control steps into each environment's episode (updated in place by ``step``)."""
        return arrays.to_torch(self._step)

    @property
    def episode_return(self) -> torch.Tensor:
        """(N,) float64 sum of each env's rewards in its episode so far (updated in place)."""
        return arrays.to_torch(self._return)

    # -- reset -------------------------------------------------------------------------------
    def reset(self, seed: int | list[int] | None = None) -> torch.Tensor:
        """Reset all environments; environment i draws its episode seeds from (seed, i)."""
        root = np.random.SeedSequence(seed)
        self._rngs = [np.random.default_rng(s) for s in root.spawn(self.num_envs)]
        ids = np.arange(self.num_envs)
        seeds = np.array([int(r.integers(2**31 - 1)) for r in self._rngs])
        self._reset_envs(ids, seeds)
        self._obs = self._observe()[0]  # its reward is dropped; this primes the reward memory
        return arrays.to_torch(self._obs)

    def reset_to(self, episode_seeds: np.ndarray | list[int]) -> torch.Tensor:
        """Reset every environment to the episode with the given seed (replays a stored one)."""
        seeds = np.asarray(episode_seeds, dtype=np.int64).reshape(self.num_envs)
        self._reset_envs(np.arange(self.num_envs), seeds)
        self._obs = self._observe()[0]
        return arrays.to_torch(self._obs)

    def sample_initial_qpos(self, episode_seed: int) -> np.ndarray:
        """The initial ``qpos`` of the episode with seed ``episode_seed`` (deterministic)."""
        rng = np.random.default_rng(episode_seed)
        rc = self.cfg.randomisation
        qpos = self.model.qpos0.copy()
        home = np.radians(HOME_POSE_DEG)
        qpos[self.idx.arm_qpos] = home + rng.uniform(-rc.arm_noise, rc.arm_noise, 6)
        qpos[self.idx.finger_qpos] = GRIPPER_STROKE / 2
        bx, by = rng.uniform(*rc.bottle_x), rng.uniform(*rc.bottle_y)
        yaw = rng.uniform(*rc.bottle_yaw)
        side = 1.0 if rng.random() < 0.5 else -1.0
        cx, cy = rng.uniform(*rc.cup_x), by + side * rng.uniform(*rc.cup_side_offset)
        cyaw = rng.uniform(*rc.cup_yaw)
        b = self.idx.bottle_qpos
        qpos[b : b + 7] = [bx, by, 0.0, math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
        c = self.idx.cup_qpos
        qpos[c : c + 7] = [cx, cy, 0.0, math.cos(cyaw / 2), 0.0, 0.0, math.sin(cyaw / 2)]
        cs, sn = math.cos(yaw), math.sin(yaw)
        rot = np.array([[cs, -sn, 0.0], [sn, cs, 0.0], [0.0, 0.0, 1.0]])
        world = self.idx.liquid_local0 @ rot.T + np.array([bx, by, 0.0])
        qpos[self.idx.liquid_qpos] = world - self.idx.liquid_body0
        return qpos

    def _reset_envs(self, ids: np.ndarray, seeds: np.ndarray) -> None:
        """Put envs ``ids`` at the start of the episodes ``seeds``; the caller then observes
        them (``_observe``), which sets their reward memory."""
        qpos = np.stack([self.sample_initial_qpos(int(s)) for s in seeds])
        arm = qpos[:, self.idx.arm_qpos]
        ctrl = np.concatenate([arm, np.full((len(ids), 1), GRIPPER_STROKE)], axis=1)
        self.backend.set_state(ids, qpos, ctrl)
        t = self._array(ids)
        self._target[t, :6] = self._array(arm, self._xp.float64)
        self._target[t, 6] = GRIPPER_STROKE
        self._step[t] = 0
        self.episode_seed[ids] = seeds
        self._seed[t] = self._array(seeds)
        self._return[t] = 0.0

    # -- step --------------------------------------------------------------------------------
    def step(
        self, actions: torch.Tensor | np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Apply ``actions`` (N, 7) in [-1, 1] for one control step (``control_substeps`` physics
        steps). Returns obs (N, d_s), reward (N,), terminated (N,) bool, truncated (N,) bool and
        info: poured_fraction, spilled_fraction, in_bottle_fraction, success, unstable,
        episode_seed, episode_step, and for environments that ended final_obs / episode_return.
        """
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        xp = self._xp
        a = self._array(actions, xp.float64)
        if tuple(a.shape) != (self.num_envs, self.action_dim):
            raise ValueError(
                f"actions must have shape ({self.num_envs}, {self.action_dim}), "
                f"got {tuple(a.shape)}"
            )
        a = xp.where(xp.isfinite(a), a, 0.0).clip(-1.0, 1.0)  # NaN and +-inf count as 0
        qpos = arrays.view(self.backend.kinematics().qpos, xp)
        q = arrays.astype(qpos[:, self._arm_qpos], xp.float64)
        # arm: target + a * arm_step, within 0.2 rad of the joint angle and inside its range;
        # jaws: target + a * gripper_step, inside [0, GRIPPER_STROKE]
        target = self._target + a * self._action_scale
        target[:, :6] = target[:, :6].clip(q - 0.2, q + 0.2)
        self._target = target.clip(self._target_lo, self._target_hi)
        self.backend.step(arrays.to_torch(self._target), self.cfg.control_substeps)
        self._step += 1
        self.stats["env_steps"] += self.num_envs

        obs, reward, terminated, truncated, info = self._observe()
        self._return += reward
        info["episode_step"] = arrays.copy(self._step)
        info["episode_seed"] = arrays.copy(self._seed)
        done = terminated | truncated
        if bool(done.any()):  # a host sync every step (mujoco_warp adds its overflow check)
            ids_x = xp.where(done)[0]
            ids = np.asarray(arrays.to_torch(ids_x).cpu())
            self.stats["episodes"] += len(ids)
            self.stats["successes"] += int(info["success"][ids_x].sum())
            self.stats["unstable"] += int(info["unstable"][ids_x].sum())
            info["final_obs"] = arrays.copy(obs)
            info["episode_return"] = arrays.astype(self._return, xp.float32)
            if self.autoreset:
                seeds = np.array([int(self._rngs[i].integers(2**31 - 1)) for i in ids])
                self._reset_envs(ids, seeds)
                obs[ids_x] = self._observe()[0][ids_x]  # (final_obs is a copy)
        self._obs = obs
        out = (obs, reward, terminated, truncated)
        return (
            *(arrays.to_torch(x) for x in out),
            {k: arrays.to_torch(v) for k, v in info.items()},
        )  # type: ignore[return-value]

    # -- task --------------------------------------------------------------------------------
    def _gather_indices(self) -> None:
        """Indices of what the task reads from ``Kinematics``, and where each ``TaskState``
        field lies in the row ``_task_state`` gathers per env."""
        ix = self.idx
        b, c = ix.bottle_qpos, ix.cup_qpos
        cols = [ix.arm_qpos, ix.finger_qpos, np.arange(b, b + 7), np.arange(c, c + 7)]
        cols.append(ix.liquid_qpos.ravel())  # (x, y, z) of each sphere
        self._qpos_cols = self._array(np.concatenate(cols))
        self._arm_qpos = self._array(ix.arm_qpos)
        self._arm_dof = self._array(ix.arm_dof)
        self._vessel_bodies = self._array([ix.bottle_body, ix.cup_body])
        sites = [ix.tcp_site, ix.bottle_grasp_site, ix.bottle_mouth_site, ix.cup_rim_site]
        self._task_sites = self._array(sites)
        layout = {  # field: width, in the order of the gathered row
            "arm_q": 6, "fingers": 2, "bottle_pos": 3, "bottle_quat": 4, "cup_pos": 3,
            "cup_quat": 4, "liquid": ix.liquid_qpos.size,  # the qpos columns above
            "arm_qd": 6, "tcp_quat": 4, "bottle_rot": 9, "cup_rot": 9,
            "tcp_pos": 3, "bottle_grasp": 3, "bottle_mouth": 3, "cup_rim": 3,
        }  # fmt: skip
        self._fields, end = {}, 0
        for name, width in layout.items():
            self._fields[name] = slice(end, end + width)
            end += width

    def _task_state(self) -> tuple[task.TaskState, Any]:
        """The task's view of the current state (float64, non-finite values zeroed) and which
        envs are unstable. What the task reads is gathered into one (N, K) row per env by a
        few index operations, then sliced into the ``TaskState`` fields."""
        k = self.backend.kinematics()
        xp, n = self._xp, self.num_envs
        qpos, qvel, xquat, xmat, site_xpos = (
            arrays.view(t, xp) for t in (k.qpos, k.qvel, k.xquat, k.xmat, k.site_xpos)
        )
        qvel_ok = xp.amax(xp.abs(qvel), axis=1) <= self.cfg.max_joint_speed  # NaN: False
        finite = xp.isfinite(qpos).all(axis=1)
        unstable = ~(qvel_ok & finite) | arrays.view(self.backend.diverged, xp)
        row = xp.concat(
            (
                qpos[:, self._qpos_cols],
                qvel[:, self._arm_dof],
                xquat[:, self._tool_body],
                xmat[:, self._vessel_bodies].reshape(n, 18),
                site_xpos[:, self._task_sites].reshape(n, 12),
            ),
            axis=1,
        )
        # The task runs in float64 whatever the backend's precision (MuJoCo Warp: float32).
        # Non-finite values are zeroed to keep the arithmetic finite (identity on finite
        # values, so no branch and no host sync); an unstable episode ends as a failure.
        row = arrays.astype(row, xp.float64)
        row = xp.where(xp.isfinite(row), row, 0.0)
        f = {name: row[:, cols] for name, cols in self._fields.items()}
        s = task.TaskState(
            arm_q=f["arm_q"],
            arm_qd=f["arm_qd"],
            opening=f["fingers"].sum(axis=1),
            tcp_pos=f["tcp_pos"],
            tcp_quat=f["tcp_quat"],
            bottle_pos=f["bottle_pos"],
            bottle_quat=f["bottle_quat"],
            cup_pos=f["cup_pos"],
            cup_quat=f["cup_quat"],
            bottle_rot=f["bottle_rot"].reshape(n, 3, 3),
            cup_rot=f["cup_rot"].reshape(n, 3, 3),
            bottle_grasp=f["bottle_grasp"],
            bottle_mouth=f["bottle_mouth"],
            cup_rim=f["cup_rim"],
            liquid=f["liquid"].reshape(n, -1, 3) + self._liquid_body0,
        )
        return s, unstable

    def _observe(self) -> tuple[Any, Any, Any, Any, dict]:
        """Observation, reward, termination, truncation and info of every env's current state,
        as arrays of the env's per-step library (``step`` hands them out as tensors).

        Rewards are relative to the previous observation (``sparse``: the in-cup fraction
        gained; ``shaped``: the potential gained), so this also moves that reward memory to the
        current state: call it exactly once per new state, after a step or a reset.
        """
        xp = self._xp
        s, unstable = self._task_state()
        liq = task.liquid_state(s)
        prog = task.progress(s)
        obs = task.observation(s, liq)
        if self.cfg.reward == "dense":
            reward, _ = task.dense_reward(s, liq, prog)
        elif self.cfg.reward == "shaped":
            potential, _ = task.dense_reward(s, liq, prog)
            reward = potential - self._prev_potential
            self._prev_potential = potential
        else:
            reward = task.sparse_reward(liq, self._prev_in_cup)
        self._prev_in_cup = liq.in_cup
        ok = prog.cup_upright & ~prog.bottle_dropped & ~unstable  # not failed
        poured = liq.in_cup >= self.cfg.success_threshold
        # Success ends an episode once the bottle is back upright; at the time limit it only
        # needs the liquid in an upright cup with the bottle not dropped. Failure (cup tipped,
        # bottle dropped, unstable physics) ends it too.
        done_success = poured & ok & prog.bottle_upright
        terminated = done_success | ~ok
        at_limit = self._step >= self.cfg.max_episode_steps
        success = done_success | (at_limit & poured & ok)
        truncated = at_limit & ~terminated
        reward = arrays.astype(xp.where(unstable, 0.0, reward), xp.float32)
        fractions = arrays.astype(xp.stack((liq.in_cup, liq.spilled, liq.in_bottle)), xp.float32)
        info = {
            "poured_fraction": fractions[0],
            "spilled_fraction": fractions[1],
            "in_bottle_fraction": fractions[2],
            "success": success,
            "unstable": unstable,
            "grasped": prog.grasped,
            "cup_upright": prog.cup_upright,
            "bottle_dropped": prog.bottle_dropped,
        }
        return obs, reward, terminated, truncated, info

    # -- state (exact resume of a training run) ---------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The whole vectorised env mid-episode: physics, control targets, episode counters,
        the per-env seed generators and the current observations, as tensors and plain Python
        values (``torch.load(weights_only=True)`` reads them). ``load_state_dict`` on an env
        built from the same config continues exactly as this one would."""
        if self._obs is None:
            raise RuntimeError("call reset() before state_dict()")
        return {
            "num_envs": self.num_envs,
            "physics": self.backend.state_dict(),
            "arm_target": self.arm_target.cpu().clone(),
            "grip_target": self.grip_target.cpu().clone(),
            "episode_step": self.episode_step.cpu().clone(),
            "episode_seed": torch.from_numpy(self.episode_seed.copy()),
            "episode_return": self.episode_return.cpu().clone(),
            "prev_in_cup": arrays.to_torch(self._prev_in_cup).cpu().clone(),
            "prev_potential": arrays.to_torch(self._prev_potential).cpu().clone(),
            "rngs": [r.bit_generator.state for r in self._rngs],
            "stats": dict(self.stats),
            "obs": arrays.to_torch(self._obs).cpu().clone(),
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if int(sd["num_envs"]) != self.num_envs:
            raise ValueError(
                f"env state is for {sd['num_envs']} environments, this env has {self.num_envs}"
            )
        self.backend.load_state_dict(sd["physics"])
        xp = self._xp
        target = torch.cat((sd["arm_target"], sd["grip_target"][:, None]), 1)
        self._target = self._array(target, xp.float64)
        self._step = self._array(sd["episode_step"], xp.int64)
        self.episode_seed = sd["episode_seed"].numpy().astype(np.int64)
        self._seed = self._array(self.episode_seed, xp.int64)
        self._return = self._array(sd["episode_return"], xp.float64)
        self._prev_in_cup = self._array(sd["prev_in_cup"], xp.float64)
        self._prev_potential = self._array(sd["prev_potential"], xp.float64)
        self._rngs = []
        for st in sd["rngs"]:
            rng = np.random.default_rng()
            rng.bit_generator.state = st
            self._rngs.append(rng)
        self.stats = dict(sd["stats"])
        self._obs = self._array(sd["obs"], xp.float32)

    # -- access for experts and renderers ----------------------------------------------------
    def mj_data(self, i: int) -> mujoco.MjData:
        """An ``MjData`` of environment ``i`` with kinematics up to date (the CPU backend's own;
        a host copy on MuJoCo Warp), for the expert and the renderer."""
        return self.backend.mj_data(i)

    @property
    def arm_targets(self) -> np.ndarray:
        """(N, 6) current joint-position targets of the arm, rad (a host copy)."""
        return self.arm_target.cpu().numpy().copy()

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> PouringVecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "EnvConfig",
    "HOME_POSE_DEG",
    "PouringVecEnv",
    "RandomisationConfig",
]
