"""High-level (HL) transitions: what the agent's replay buffer stores, one per agent decision.

(s_t, z_t, R = sum of the executed steps' rewards, s', terminated, truncated), s_t the state
the skill (or, flat, the action) was chosen in. ``HLTransitionBuilder`` cuts them out of a
vectorised rollout one env step at a time; ``hl_replay`` is the buffer that holds them.

Shapes: N = parallel envs, M = transitions, d_s = state size, n_z = skill size.
"""

from __future__ import annotations

import torch

from pourlit.rl.buffer import ReplayBuffer
from pourlit.rl.returns import MC_KEY

HL_KEYS = ("obs", "z", "reward", "next_obs", "terminated", "truncated")
"""The fields of an HL transition: what the replay buffer stores."""


class HLTransitionBuilder:
    """Turns a vectorised rollout, one env step at a time, into high-level transitions.

    Each env runs its own skill clock: the HL picks a new skill at every episode start and
    after every ``horizon`` (H) executed steps. A skill's transition is

        (obs = s_t, z = z_t, reward = sum of the rewards of its executed steps (H, or fewer
         when its episode ended), next_obs, terminated, truncated)

    where ``s_t`` is the state the skill was CHOSEN in (the reference stores s_{t+1} for all
    but the first HL step; pourlit does not). A skill that runs its H steps ends at s_{t+H},
    which arrives as ``obs`` of the next ``add_step`` (so it is emitted one call later); a
    skill cut by the end of its episode ends at that step's ``final_obs`` with that step's
    terminated / truncated flags. Skills still running are kept across calls, so keep one
    builder for the whole run; ``state_dict`` saves them (with the env's state) for a resume.
    """

    def __init__(self, horizon: int) -> None:
        if horizon < 1:
            raise ValueError(f"HLTransitionBuilder: horizon must be >= 1, got {horizon}")
        self.horizon = horizon
        self._obs: torch.Tensor | None = None  # (N, d_s) decision state of the running skill
        self._z: torch.Tensor | None = None  # (N, n_z)
        self._ret: torch.Tensor | None = None  # (N,) rewards summed so far
        self._len: torch.Tensor | None = None  # (N,) steps executed so far
        self._active: torch.Tensor | None = None  # (N,) bool, a skill is running
        # (M,) long: the env of each transition the last ``add_step`` returned, in its order
        self.last_envs = torch.zeros(0, dtype=torch.long)

    def add_step(
        self,
        obs: torch.Tensor,
        z: torch.Tensor,
        decision: torch.Tensor,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        final_obs: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Record one env step; return the HL transitions completed by it (M of them, M >= 0).

        ``obs`` (N, d_s): the state the step was taken from (s_t); ``z`` (N, n_z): the skill
        chosen at this step (read only where ``decision``); ``decision`` (N,) bool: a new skill
        starts at this step; ``reward``, ``terminated``, ``truncated`` (N,): the step's outcome;
        ``final_obs`` (N, d_s): the last state of the envs whose episode ended at this step
        (rows of other envs are ignored; may be None when none ended).

        Returns a dict keyed by ``HL_KEYS``: obs (M, d_s), z (M, n_z), reward (M,),
        next_obs (M, d_s), terminated (M,) bool, truncated (M,) bool;
        skills closed by a decision come before skills closed by an episode end.
        ``last_envs`` (M,) then names the env of each.
        """
        decision, terminated, truncated = decision.bool(), terminated.bool(), truncated.bool()
        if self._obs is None:
            n = obs.shape[0]
            self._obs, self._z = obs.new_zeros(obs.shape), z.new_zeros(z.shape)
            self._ret = reward.new_zeros(n)
            self._len = torch.zeros(n, dtype=torch.long, device=obs.device)
            self._active = torch.zeros(n, dtype=torch.bool, device=obs.device)
        assert self._z is not None and self._ret is not None
        assert self._len is not None and self._active is not None
        self._check_clock(decision)

        # 1. a skill that ran its H steps ends at the state its successor is chosen in
        close = decision & self._active
        no = torch.zeros_like(close)
        by_clock = self._transitions(close, obs, no, no)

        # 2. start the new skills at their decision state s_t
        self._obs[decision] = obs[decision]
        self._z[decision] = z[decision]
        self._ret[decision] = 0.0
        self._len[decision] = 0
        self._active |= decision

        # 3. this step's reward belongs to the running skill
        self._ret += reward
        self._len += 1

        # 4. a skill cut by the end of its episode ends at final_obs
        ended = terminated | truncated
        if ended.any() and final_obs is None:
            raise ValueError(
                f"HLTransitionBuilder.add_step: envs {_ids(ended)} ended but final_obs is None; "
                "pass the env's info['final_obs']"
            )
        by_end = self._transitions(
            ended, final_obs if final_obs is not None else obs, terminated, truncated
        )
        self._active &= ~ended
        self.last_envs = torch.cat([close.nonzero().flatten(), ended.nonzero().flatten()])
        return {k: torch.cat([by_clock[k], by_end[k]]) for k in HL_KEYS}

    _STATE = ("_obs", "_z", "_ret", "_len", "_active")

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        """The running skills (for an exact resume together with the env's state)."""
        return {
            k: None if getattr(self, k) is None else getattr(self, k).clone() for k in self._STATE
        }

    def load_state_dict(self, state: dict[str, torch.Tensor | None]) -> None:
        for k in self._STATE:
            v = state[k]
            setattr(self, k, None if v is None else v.clone())

    def _transitions(
        self,
        rows: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        assert self._obs is not None and self._z is not None and self._ret is not None
        return {
            "obs": self._obs[rows].clone(),
            "z": self._z[rows].clone(),
            "reward": self._ret[rows].clone(),
            "next_obs": next_obs[rows].clone(),
            "terminated": terminated[rows],
            "truncated": truncated[rows],
        }

    def _check_clock(self, decision: torch.Tensor) -> None:
        assert self._len is not None and self._active is not None
        idle = ~self._active & ~decision
        early = self._active & decision & (self._len < self.horizon)
        late = self._active & ~decision & (self._len >= self.horizon)
        for bad, why in (
            (idle, "have no running skill (first step or after an episode end) but no decision"),
            (early, f"chose a new skill before their skill ran its {self.horizon} steps"),
            (late, f"did not choose a new skill after {self.horizon} steps"),
        ):
            if bad.any():
                raise ValueError(f"HLTransitionBuilder.add_step: envs {_ids(bad)} {why}")


def _ids(mask: torch.Tensor) -> list[int]:
    return mask.nonzero().flatten().tolist()


def hl_replay(
    state_dim: int,
    latent_dim: int,
    capacity: int,
    device: torch.device | str = "cpu",
    returns: bool = False,
) -> ReplayBuffer:
    """Room for ``capacity`` HL transitions (``HL_KEYS``), and with ``returns`` (a Monte Carlo
    ``value_target``) each one's return G_t under ``MC_KEY`` (NaN until its episode ends)."""
    specs = {"obs": (state_dim,), "z": (latent_dim,), "reward": (), "next_obs": (state_dim,)}
    specs |= {"terminated": (), "truncated": ()}
    if returns:
        specs[MC_KEY] = ()
    return ReplayBuffer(capacity, specs, device)
