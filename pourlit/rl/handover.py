"""DAgger-style handover episodes: a learner drives, the scripted expert takes over.

Behaviour cloning learns the expert's actions on the expert's own states; a learner that
drifts off them (the skill prior carrying the bottle too high, then pouring beside the cup)
meets states no demonstration covers. Handover episodes label exactly those states (as
HG-DAgger, Kelly et al. 2019, with the scripted expert as the human): the learner acts from
the episode start; once it has lifted the bottle (its base above ``LIFT_HEIGHT``) the expert
takes over after a delay drawn uniformly from 0 .. ``max_delay`` control steps (so handovers
spread over the learner's carry, lowering and tilt), or at once when liquid starts leaving
the bottle, and pours from wherever the learner left it (``ScriptedPourExpert.take_over``:
an upright bottle is carried, lowered, tilted; a tilted one is rolled on while its mouth
moves to the pour point).

Labels: from the handover step ``expert_from`` on, the expert's intended actions (DART labels,
before exploration noise); before it, the learner's own actions (no expert label exists
there; training skips those steps, see ``pourlit.data.datamodule``).
"""

from __future__ import annotations

import numpy as np
import torch

from pourlit.expert.pour import ScriptedPourExpert
from pourlit.rl.acting import PriorPolicy
from pourlit.sim.task import OBS_NAMES

LIFT_HEIGHT = 0.03  # m, bottle base above the table (as pourlit.sim.task.progress's "lifted")
POURING_BELOW = 0.97  # liquid fraction in the bottle under which the learner is pouring
_BOTTLE_Z = OBS_NAMES.index("bottle_pos_z")
_IN_BOTTLE = OBS_NAMES.index("liquid_in_bottle")


def handover_due(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lifted, pouring)``, (N,) bool each, from observations (N, d_s): the bottle base above
    ``LIFT_HEIGHT``; under ``POURING_BELOW`` of the liquid still in the bottle."""
    return obs[:, _BOTTLE_Z] > LIFT_HEIGHT, obs[:, _IN_BOTTLE] < POURING_BELOW


class Handover:
    """Acts in every env of ``expert.env``: ``learner`` until the handover, ``expert`` after.

    ``expert_from[i]`` is the episode step at which the expert took over env ``i`` (-1 while
    the learner drives). Call :meth:`begin` for envs whose episode (re)started.
    """

    def __init__(
        self, expert: ScriptedPourExpert, learner: PriorPolicy, max_delay: int, seed: int = 0
    ) -> None:
        if max_delay < 0:
            raise ValueError(f"handover_delay must be >= 0, got {max_delay}")
        self.expert, self.learner, self.env = expert, learner, expert.env
        self.max_delay, self.seed = int(max_delay), int(seed)
        n = self.env.num_envs
        self.expert_from = np.full(n, -1, dtype=np.int64)
        self.due = np.full(n, -1, dtype=np.int64)  # step the expert takes over; -1: not lifted

    def begin(self, env_ids: np.ndarray | list[int] | None = None) -> None:
        ids = np.arange(self.env.num_envs) if env_ids is None else np.asarray(env_ids)
        self.learner.begin(ids)
        self.expert.release(ids)
        self.expert_from[ids] = -1
        self.due[ids] = -1

    def act(self, obs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``(actions, labels)``, (N, d_a) float32 each: what to execute, and what to record as
        the expert label (the intended action after the handover, the learner's before)."""
        o = obs.cpu().numpy()
        step = self.env.episode_step.cpu().numpy()
        lifted, pouring = handover_due(o)
        driving = self.expert_from < 0
        for i in np.flatnonzero(driving & (self.due < 0) & lifted):
            rng = np.random.default_rng([self.seed, int(self.env.episode_seed[i]), 1])
            self.due[i] = step[i] + int(rng.integers(0, self.max_delay + 1))
        take = driving & (self.due >= 0) & ((step >= self.due) | pouring)
        if take.any():
            ids = np.flatnonzero(take)
            self.expert.take_over(ids)
            self.expert_from[ids] = step[ids]
        actions = self.learner(obs).numpy().astype(np.float32)
        labels = actions.copy()
        ex = np.flatnonzero(self.expert_from >= 0)
        if len(ex):
            expert_actions = self.expert.act(ex)
            actions[ex] = expert_actions[ex]
            labels[ex] = self.expert.intended[ex]
        return actions, labels
