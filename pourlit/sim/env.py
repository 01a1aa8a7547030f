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

import dataclasses
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import mujoco
import numpy as np
import torch

from pourlit.sim import task
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
        # Per-step state lives on the env's device (no host copies per step on a GPU backend);
        # episode seeds and their generators live on the host (used only at resets).
        dev, f64 = self.device, torch.float64
        self.arm_lo = torch.as_tensor(self.model.jnt_range[arm_ids, 0], dtype=f64, device=dev)
        self.arm_hi = torch.as_tensor(self.model.jnt_range[arm_ids, 1], dtype=f64, device=dev)
        self.arm_target = torch.zeros(n, 6, dtype=f64, device=dev)
        self.grip_target = torch.full((n,), GRIPPER_STROKE, dtype=f64, device=dev)
        self.episode_step = torch.zeros(n, dtype=torch.long, device=dev)
        self.episode_seed = np.zeros(n, dtype=np.int64)
        self._episode_seed_t = torch.zeros(n, dtype=torch.long, device=dev)
        self.episode_return = torch.zeros(n, dtype=f64, device=dev)
        self._rngs: list[np.random.Generator] = [np.random.default_rng(i) for i in range(n)]
        self._prev_in_cup = torch.zeros(n, device=self.device)
        self._prev_potential = torch.zeros(n, device=self.device)  # "shaped" reward
        self._liquid_body0 = torch.as_tensor(self.idx.liquid_body0, device=self.device)
        self.stats = {"episodes": 0, "successes": 0, "unstable": 0, "env_steps": 0}
        self._obs: torch.Tensor | None = None

    # -- reset -------------------------------------------------------------------------------
    def reset(self, seed: int | list[int] | None = None) -> torch.Tensor:
        """Reset all environments; environment i draws its episode seeds from (seed, i)."""
        root = np.random.SeedSequence(seed)
        self._rngs = [np.random.default_rng(s) for s in root.spawn(self.num_envs)]
        ids = np.arange(self.num_envs)
        seeds = np.array([int(r.integers(2**31 - 1)) for r in self._rngs])
        self._reset_envs(ids, seeds)
        self._obs = self._observe()[0]  # its reward is dropped; this primes the reward memory
        return self._obs

    def reset_to(self, episode_seeds: np.ndarray | list[int]) -> torch.Tensor:
        """Reset every environment to the episode with the given seed (replays a stored one)."""
        seeds = np.asarray(episode_seeds, dtype=np.int64).reshape(self.num_envs)
        self._reset_envs(np.arange(self.num_envs), seeds)
        self._obs = self._observe()[0]
        return self._obs

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
        t = torch.as_tensor(ids, device=self.device)
        self.arm_target[t] = torch.as_tensor(arm, dtype=torch.float64, device=self.device)
        self.grip_target[t] = GRIPPER_STROKE
        self.episode_step[t] = 0
        self.episode_seed[ids] = seeds
        self._episode_seed_t[t] = torch.as_tensor(seeds, device=self.device)
        self.episode_return[t] = 0.0

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
        a = torch.as_tensor(actions).detach().to(self.device, torch.float64)
        if a.shape != (self.num_envs, self.action_dim):
            raise ValueError(
                f"actions must have shape ({self.num_envs}, {self.action_dim}), "
                f"got {tuple(a.shape)}"
            )
        a = torch.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0).clamp(-1.0, 1.0)
        q = self.backend.kinematics().qpos[:, self.idx.arm_qpos].to(torch.float64)
        target = self.arm_target + a[:, :6] * self.cfg.arm_step
        target = torch.clamp(target, q - 0.2, q + 0.2)
        self.arm_target = torch.clamp(target, self.arm_lo, self.arm_hi)
        grip = self.grip_target + a[:, 6] * self.cfg.gripper_step
        self.grip_target = grip.clamp(0.0, GRIPPER_STROKE)
        ctrl = torch.cat([self.arm_target, self.grip_target[:, None]], dim=1)
        self.backend.step(ctrl, self.cfg.control_substeps)
        self.episode_step += 1
        self.stats["env_steps"] += self.num_envs

        obs, reward, terminated, info = self._observe()
        truncated = (self.episode_step >= self.cfg.max_episode_steps) & ~terminated
        self.episode_return += reward.to(torch.float64)
        info["episode_step"] = self.episode_step.clone()
        info["episode_seed"] = self._episode_seed_t.clone()
        done = terminated | truncated
        if bool(done.any()):  # a host sync every step (mujoco_warp adds its overflow check)
            ids_t = done.nonzero().flatten()
            ids = ids_t.cpu().numpy()
            self.stats["episodes"] += len(ids)
            self.stats["successes"] += int(info["success"][ids_t].sum())
            self.stats["unstable"] += int(info["unstable"][ids_t].sum())
            info["final_obs"] = obs.clone()
            info["episode_return"] = self.episode_return.to(torch.float32)
            if self.autoreset:
                seeds = np.array([int(self._rngs[i].integers(2**31 - 1)) for i in ids])
                self._reset_envs(ids, seeds)
                obs[ids_t] = self._observe()[0][ids_t]  # (final_obs is a copy)
        self._obs = obs
        return obs, reward, terminated, truncated, info

    # -- task --------------------------------------------------------------------------------
    def _task_state(self) -> tuple[task.TaskState, torch.Tensor]:
        k = self.backend.kinematics()
        ix = self.idx
        qvel_ok = k.qvel.abs().amax(1) <= self.cfg.max_joint_speed  # NaN compares False
        unstable = ~qvel_ok | ~torch.isfinite(k.qpos).all(1) | self.backend.diverged
        # keep the arithmetic below finite (identity on finite values, so no branch and no
        # host sync); an unstable episode ends as a failure
        clean = dataclasses.replace(
            k,
            **{
                f.name: torch.nan_to_num(getattr(k, f.name), nan=0.0, posinf=0.0, neginf=0.0)
                for f in dataclasses.fields(k)
            },
        )
        # the task runs in float64 whatever the backend's precision (MuJoCo Warp: float32)
        dev, f64 = self.device, torch.float64
        qpos, qvel, xmat = (
            clean.qpos.to(dev, f64),
            clean.qvel.to(dev, f64),
            clean.xmat.to(dev, f64),
        )
        site, xquat = clean.site_xpos.to(dev, f64), clean.xquat.to(dev, f64)
        b, c = ix.bottle_qpos, ix.cup_qpos
        s = task.TaskState(
            arm_q=qpos[:, ix.arm_qpos],
            arm_qd=qvel[:, ix.arm_dof],
            opening=qpos[:, ix.finger_qpos].sum(1),
            tcp_pos=site[:, ix.tcp_site],
            tcp_quat=xquat[:, self._tool_body],
            bottle_pos=qpos[:, b : b + 3],
            bottle_quat=qpos[:, b + 3 : b + 7],
            cup_pos=qpos[:, c : c + 3],
            cup_quat=qpos[:, c + 3 : c + 7],
            bottle_rot=xmat[:, ix.bottle_body],
            cup_rot=xmat[:, ix.cup_body],
            bottle_grasp=site[:, ix.bottle_grasp_site],
            bottle_mouth=site[:, ix.bottle_mouth_site],
            cup_rim=site[:, ix.cup_rim_site],
            liquid=qpos[:, ix.liquid_qpos] + self._liquid_body0,
        )
        return s, unstable.to(dev)

    def _observe(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Observation, reward, termination and info of every env's current state.

        Rewards are relative to the previous observation (``sparse``: the in-cup fraction
        gained; ``shaped``: the potential gained), so this also moves that reward memory to the
        current state: call it exactly once per new state, after a step or a reset.
        """
        s, unstable = self._task_state()
        liq = task.liquid_state(s)
        prog = task.progress(s)
        obs = task.observation(s, liq)
        if self.cfg.reward == "dense":
            reward, _ = task.dense_reward(s, liq, prog)
        elif self.cfg.reward == "shaped":
            potential, _ = task.dense_reward(s, liq, prog)
            reward = potential - self._prev_potential
            self._prev_potential = potential.clone()
        else:
            reward = task.sparse_reward(liq, self._prev_in_cup)
        self._prev_in_cup = liq.in_cup.clone()
        ok = prog.cup_upright & ~prog.bottle_dropped & ~unstable
        poured = liq.in_cup >= self.cfg.success_threshold
        # Success ends an episode once the bottle is back upright; at the time limit it only
        # needs the liquid in an upright cup with the bottle not dropped.
        done_success = poured & ok & prog.bottle_upright
        failed = ~prog.cup_upright | prog.bottle_dropped | unstable
        terminated = done_success | failed
        at_limit = self.episode_step >= self.cfg.max_episode_steps
        success = done_success | (at_limit & poured & ok)
        reward = torch.where(unstable, torch.zeros_like(reward), reward).to(torch.float32)
        info = {
            "poured_fraction": liq.in_cup.float(),
            "spilled_fraction": liq.spilled.float(),
            "in_bottle_fraction": liq.in_bottle.float(),
            "success": success,
            "unstable": unstable,
            "grasped": prog.grasped,
            "cup_upright": prog.cup_upright,
            "bottle_dropped": prog.bottle_dropped,
        }
        return obs, reward, terminated, info

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
            "prev_in_cup": self._prev_in_cup.cpu().clone(),
            "prev_potential": self._prev_potential.cpu().clone(),
            "rngs": [r.bit_generator.state for r in self._rngs],
            "stats": dict(self.stats),
            "obs": self._obs.cpu().clone(),
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if int(sd["num_envs"]) != self.num_envs:
            raise ValueError(
                f"env state is for {sd['num_envs']} environments, this env has {self.num_envs}"
            )
        self.backend.load_state_dict(sd["physics"])
        dev = self.device
        self.arm_target = sd["arm_target"].to(dev, torch.float64).clone()
        self.grip_target = sd["grip_target"].to(dev, torch.float64).clone()
        self.episode_step = sd["episode_step"].to(dev, torch.long).clone()
        self.episode_seed = sd["episode_seed"].numpy().astype(np.int64)
        self._episode_seed_t = torch.as_tensor(self.episode_seed, device=dev)
        self.episode_return = sd["episode_return"].to(dev, torch.float64).clone()
        self._prev_in_cup = sd["prev_in_cup"].to(self.device).clone()
        self._prev_potential = sd["prev_potential"].to(self.device).clone()
        self._rngs = []
        for st in sd["rngs"]:
            rng = np.random.default_rng()
            rng.bit_generator.state = st
            self._rngs.append(rng)
        self.stats = dict(sd["stats"])
        self._obs = sd["obs"].to(self.device).clone()

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
