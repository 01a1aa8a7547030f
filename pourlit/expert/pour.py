"""The scripted pouring expert: a waypoint state machine tracked with damped least-squares IK.

Phases (as the seed project's expert): pre-grasp behind the bottle with the jaw open ->
grasp pose -> close -> lift -> carry beside the cup -> lower -> tilt to pour -> hold ->
tilt back upright -> hold until the episode ends. Diversity comes from the reset
randomisation and from per-episode expert parameters (stand-off, grasp offsets, speeds, pour
angle, pour offset and height, hold time) plus optional Gaussian action noise. The expert
reads the simulator state (it is privileged); the actions it returns are the env's actions,
and the recorded actions are exactly those executed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import mujoco
import numpy as np

from pourlit.expert.ik import DampedLeastSquaresIK
from pourlit.sim.env import PouringVecEnv


@dataclass(frozen=True)
class ExpertParams:
    """One episode's expert choices (m, rad, control steps)."""

    standoff: float  # pre-grasp distance behind the bottle along the approach
    approach_yaw: float  # approach direction offset from the radial direction
    grasp_depth: float  # grasp point offset along the approach
    grasp_height: float  # grasp point offset along z
    lift: float  # lift height above the grasp point
    pour_angle: float  # roll of the bottle while pouring
    carry_offset: float  # horizontal distance of the TCP from the cup axis before tilting
    carry_height: float  # TCP height before tilting
    mouth_along: float  # mouth centre's distance from the cup axis (near side) while pouring
    mouth_height: float  # mouth centre's height above the cup rim while pouring
    speed: float  # duration scale (1 = nominal, < 1 faster)
    hold_steps: int  # control steps held at full tilt

    @classmethod
    def sample(cls, rng: np.random.Generator) -> ExpertParams:
        return cls(
            standoff=rng.uniform(0.06, 0.09),
            approach_yaw=rng.uniform(-math.radians(10), math.radians(10)),
            grasp_depth=rng.uniform(-0.005, 0.005),
            grasp_height=rng.uniform(-0.01, 0.01),
            lift=rng.uniform(0.12, 0.18),
            pour_angle=math.radians(rng.uniform(105, 125)),
            carry_offset=rng.uniform(0.15, 0.18),
            carry_height=rng.uniform(0.19, 0.22),
            mouth_along=rng.uniform(0.02, 0.035),
            mouth_height=rng.uniform(0.035, 0.05),
            speed=rng.uniform(0.85, 1.2),
            hold_steps=int(rng.integers(35, 60)),
        )


TAKE_OVER_TILT_DEG = 15.0  # take_over: a bottle tilted more than this is poured on, not carried

PHASES = (
    "pregrasp",
    "approach",
    "close",
    "lift",
    "carry",
    "lower",
    "tilt",
    "hold",
    "untilt",
    "done",
)


def _slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    v = np.empty(3)
    mujoco.mju_subQuat(v, q1, q0)
    q = q0.copy()
    mujoco.mju_quatIntegrate(q, v, s)
    return q


def _mat2quat(r: np.ndarray) -> np.ndarray:
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, r.ravel())
    return q


def _quat2mat(q: np.ndarray) -> np.ndarray:
    r = np.empty(9)
    mujoco.mju_quat2Mat(r, q)
    return r.reshape(3, 3)


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    q = np.empty(4)
    mujoco.mju_axisAngle2Quat(q, axis, angle)
    return _quat2mat(q)


class _Plan:
    """The state machine of one environment's episode."""

    def __init__(self, params: ExpertParams) -> None:
        self.p = params
        self.phase = 0
        self.t = 0
        self.start_pos = np.zeros(3)
        self.start_quat = np.array([1.0, 0, 0, 0])
        self.goal_pos = np.zeros(3)
        self.goal_quat = np.array([1.0, 0, 0, 0])
        self.duration = 1
        self.grasp_rot = np.eye(3)
        self.approach = np.array([1.0, 0, 0])
        self.side = 1.0
        self.pivot = False  # tilt about the bottle mouth instead of the TCP
        self.mouth_tcp = np.zeros(3)  # mouth position in the TCP frame
        self.mouth_start = np.zeros(3)
        self.mouth_goal = np.zeros(3)
        self.mouth_carry = np.zeros(3)  # mouth position before the tilt (returned to after)

    @property
    def name(self) -> str:
        return PHASES[self.phase]


class ScriptedPourExpert:
    """Pours in every environment of ``env``; call :meth:`begin` for environments whose episode
    (re)started, then :meth:`act` once per control step.

    Args:
        env: the vectorised env (CPU backend: the expert reads each env's ``MjData``).
        seed: expert seed; an episode's parameters derive from (seed, episode seed).
        action_noise: std of Gaussian noise added to the actions (before clipping).
    """

    def __init__(self, env: PouringVecEnv, seed: int = 0, action_noise: float = 0.0) -> None:
        self.env = env
        self.seed = seed
        self.action_noise = action_noise
        self.ik = DampedLeastSquaresIK(
            env.model, "tcp", env.idx.arm_qpos, env.idx.arm_dof, damping=0.05
        )
        self.plans: list[_Plan | None] = [None] * env.num_envs
        self.rngs: list[np.random.Generator] = [np.random.default_rng(0)] * env.num_envs
        self.intended = np.zeros((env.num_envs, 7))
        """(N, 7) the last :meth:`act`'s actions before noise, clipped to [-1, 1]."""

    def begin(self, env_ids: np.ndarray | list[int] | None = None) -> None:
        """Start a new plan for ``env_ids`` (all when None) from their current episode seed."""
        ids = range(self.env.num_envs) if env_ids is None else env_ids
        for i in ids:
            plan = self._new_plan(i)
            self.plans[i] = plan
            self._enter(plan, self.env.mj_data(i), first=True)

    def _new_plan(self, i: int) -> _Plan:
        """A plan with env ``i``'s episode parameters, drawn (with its noise generator) from
        (expert seed, episode seed)."""
        self.rngs[i] = np.random.default_rng([self.seed, int(self.env.episode_seed[i])])
        return _Plan(ExpertParams.sample(self.rngs[i]))

    def release(self, env_ids: np.ndarray | list[int]) -> None:
        """Drop the plans of ``env_ids`` (another policy acts there until a take_over)."""
        for i in env_ids:
            self.plans[i] = None

    def take_over(self, env_ids: np.ndarray | list[int]) -> None:
        """Start plans for ``env_ids`` mid-episode, from whatever state another policy left
        them in with the bottle in hand (DAgger-style handover). The grasp frame is rebuilt
        upright about the TCP's approach axis (a pouring roll turns about that axis, so it
        stays horizontal); a bottle within ``TAKE_OVER_TILT_DEG`` of vertical is carried from
        the current pose (carry, also standing it upright), lowered, tilted and poured; a
        more tilted one is rolled on from its current pose while its mouth moves to the pour
        point (tilt), then held and untilted."""
        ix = self.env.idx
        for i in env_ids:
            plan = self._new_plan(i)
            d = self.env.mj_data(i)
            u = d.site_xmat[ix.tcp_site].reshape(3, 3)[:, 2].copy()  # approach axis
            u[2] = 0.0
            u /= max(float(np.linalg.norm(u)), 1e-9)
            y = np.array([-u[1], u[0], 0.0])
            plan.approach, plan.grasp_rot = u, np.column_stack([np.cross(y, u), y, u])
            away = (d.site_xpos[ix.bottle_grasp_site] - d.site_xpos[ix.cup_rim_site])[:2]
            plan.side = 1.0 if np.dot(y[:2], away) >= 0 else -1.0
            up = d.xmat[ix.bottle_body].reshape(3, 3)[2, 2]
            tilted = up < math.cos(math.radians(TAKE_OVER_TILT_DEG))
            plan.phase = PHASES.index("tilt" if tilted else "carry")
            self._enter(plan, d, first=True)
            if not tilted:
                plan.goal_quat = _mat2quat(plan.grasp_rot)  # carry stands the bottle upright
            self.plans[i] = plan

    def params(self, i: int) -> dict:
        plan = self.plans[i]
        assert plan is not None
        return asdict(plan.p)

    def phase(self, i: int) -> str:
        plan = self.plans[i]
        return "none" if plan is None else plan.name

    # -- planning ----------------------------------------------------------------------------
    def _enter(self, plan: _Plan, d: mujoco.MjData, first: bool = False) -> None:
        """Set the segment (start, goal, duration) of the plan's current phase."""
        ix = self.env.idx
        p = plan.p
        if first:
            plan.start_pos = d.site_xpos[ix.tcp_site].copy()
            plan.start_quat = _mat2quat(d.site_xmat[ix.tcp_site].reshape(3, 3))
        else:
            plan.start_pos, plan.start_quat = plan.goal_pos.copy(), plan.goal_quat.copy()
        plan.t = 0
        grasp = d.site_xpos[ix.bottle_grasp_site].copy()
        name = plan.name
        plan.pivot = name in ("tilt", "hold", "untilt")
        goal_pos, goal_rot = plan.start_pos.copy(), _quat2mat(plan.start_quat)
        steps = 10
        if name in ("pregrasp", "approach"):
            radial = math.atan2(grasp[1], grasp[0]) + p.approach_yaw
            u = np.array([math.cos(radial), math.sin(radial), 0.0])
            y = np.array([-u[1], u[0], 0.0])
            plan.grasp_rot = np.column_stack([np.cross(y, u), y, u])
            plan.approach = u
            goal_rot = plan.grasp_rot
            target = grasp + np.array([0.0, 0.0, p.grasp_height])
            if name == "pregrasp":
                goal_pos = target - p.standoff * u
                steps = int(np.clip(np.linalg.norm(goal_pos - plan.start_pos) / 0.004, 30, 70))
            else:
                goal_pos = target + p.grasp_depth * u
                steps = 25
        elif name == "close":
            steps = 14
        elif name == "lift":
            goal_pos = plan.start_pos + np.array([0.0, 0.0, p.lift])
            steps = 28
        elif name in ("carry", "lower"):
            cup = d.site_xpos[ix.cup_rim_site].copy()
            perp = np.array([-plan.approach[1], plan.approach[0], 0.0])
            plan.side = 1.0 if np.dot(perp[:2], (grasp - cup)[:2]) >= 0 else -1.0
            pour_xy = cup[:2] + p.carry_offset * plan.side * perp[:2]
            z = plan.start_pos[2] if name == "carry" else p.carry_height
            goal_pos = np.array([pour_xy[0], pour_xy[1], z])
            steps = 50 if name == "carry" else 18
        elif name == "tilt":
            # Pivot about the mouth: it travels to just inside the cup's near rim while the
            # bottle rolls, so the stream leaves over the cup whatever the tilt speed.
            tcp_rot = d.site_xmat[ix.tcp_site].reshape(3, 3)
            mouth = d.site_xpos[ix.bottle_mouth_site]
            plan.mouth_tcp = tcp_rot.T @ (mouth - d.site_xpos[ix.tcp_site])
            plan.mouth_start = plan.start_pos + _quat2mat(plan.start_quat) @ plan.mouth_tcp
            plan.mouth_carry = plan.mouth_start.copy()
            cup = d.site_xpos[ix.cup_rim_site]
            w = plan.side * np.array([-plan.approach[1], plan.approach[0], 0.0])
            plan.mouth_goal = cup + p.mouth_along * w + np.array([0.0, 0.0, p.mouth_height])
            goal_rot = _axis_rotation(plan.approach, plan.side * p.pour_angle) @ plan.grasp_rot
            goal_pos = plan.mouth_goal - goal_rot @ plan.mouth_tcp
            steps = 55
        elif name == "hold":
            plan.mouth_start = plan.mouth_goal.copy()
            steps = p.hold_steps
        elif name == "untilt":
            plan.mouth_start, plan.mouth_goal = plan.mouth_goal.copy(), plan.mouth_carry.copy()
            goal_rot = plan.grasp_rot
            goal_pos = plan.mouth_goal - goal_rot @ plan.mouth_tcp
            steps = 50
        else:  # done
            steps = 10**9
        plan.goal_pos = goal_pos
        plan.goal_quat = _mat2quat(goal_rot)
        plan.duration = max(1, int(round(steps * p.speed)))

    def _target(self, plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
        s = min(1.0, (plan.t + 1) / plan.duration)
        s = s * s * (3.0 - 2.0 * s)  # smoothstep: zero velocity at both ends
        rot = _quat2mat(_slerp(plan.start_quat, plan.goal_quat, s))
        if plan.pivot:  # the mouth leads (reaches its goal at 70% of the roll)
            m = min(1.0, s / 0.7)
            mouth = plan.mouth_start + m * (plan.mouth_goal - plan.mouth_start)
            return mouth - rot @ plan.mouth_tcp, rot
        pos = plan.start_pos + s * (plan.goal_pos - plan.start_pos)
        return pos, rot

    # -- acting ------------------------------------------------------------------------------
    def act(self, env_ids: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Actions (N, 7) in [-1, 1] for the current state of the environments ``env_ids``
        (all when None; the others' rows are 0), exploration noise included; :attr:`intended`
        holds the same step's actions without it (the DART labels: what the expert wants at
        the state the noisy actions led to)."""
        env = self.env
        ids = range(env.num_envs) if env_ids is None else env_ids
        actions = np.zeros((env.num_envs, 7))
        targets = env.arm_targets
        for i in ids:
            plan = self.plans[i]
            if plan is None:
                raise RuntimeError(f"expert.begin() was not called for env {i}")
            d = env.mj_data(i)
            if plan.t >= plan.duration and plan.name != "done":
                plan.phase += 1
                self._enter(plan, d)
            pos, rot = self._target(plan)
            seed_q = d.qpos.copy()
            seed_q[env.idx.arm_qpos] = targets[i]
            q_des, _ = self.ik.solve(seed_q, pos, rot)
            actions[i, :6] = (q_des - targets[i]) / env.cfg.arm_step
            actions[i, 6] = 1.0 if plan.name in ("pregrasp", "approach") else -1.0
            plan.t += 1
        self.intended = np.clip(actions, -1.0, 1.0)
        if self.action_noise > 0:
            for i in ids:
                actions[i] += self.rngs[i].normal(0.0, self.action_noise, 7)
        return np.clip(actions, -1.0, 1.0)
