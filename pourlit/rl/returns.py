"""Monte Carlo returns of the agent's own episodes, for the critic (``value_target``).

Each HL transition of an episode gets, once the episode has ended, its discounted return to
go over the episode's remaining HL transitions:

    G_t = sum_{k >= t} gamma^(k - t) r_k        (r_k: the k-th HL reward, summed over its skill)

A time-limit cut (truncation) ends the sum as a termination does: G is the return the
behaviour actually collected, a lower bound of the value where the episode had a future.

Why: the critic of prior-regularised SAC learns from one-step TD targets, and with a
reward that comes late (the liquid lands in the cup ~40 decisions after the grasp) it takes
many updates before it ranks skills at the decisions that matter; until then value-based
skill selection (``q_select``) acts on noise. Regressing Q(s, z) on G_t (``value_target:
mc``), or taking ``max(TD target, G_t)`` (``max``: Monte Carlo augmented actor-critic,
Wilcox et al. 2022), gives the critic the outcome of the episode from its first update.
"""

from __future__ import annotations

from typing import Any

import torch

from pourlit.rl.buffer import ReplayBuffer

VALUE_TARGETS = ("td", "mc", "max")  # what the critics regress on: see SACModule
MC_KEY = "mc_return"  # the replay field: G_t, NaN while the transition's episode runs


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """``G_t = r_t + gamma * G_{t+1}``, ``G_T = r_T``, for one episode's rewards (T,) -> (T,)."""
    out = torch.empty_like(rewards)
    g = rewards.new_zeros(())
    for t in range(rewards.shape[0] - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def mc_critic_target(y: torch.Tensor, g: torch.Tensor, mode: str) -> torch.Tensor:
    """The critics' regression target from the one-step target ``y`` (B,) and the scaled Monte
    Carlo returns ``g`` (B,), NaN where the transition's episode is still running:

        mode "mc":   g where known, else y
        mode "max":  max(y, g) where g is known, else y     (MCAC)
        mode "td":   y
    """
    if mode == "td":
        return y
    g_or_y = torch.where(torch.isnan(g), y, g)
    if mode == "mc":
        return g_or_y
    if mode == "max":
        return torch.maximum(y, g_or_y)
    raise ValueError(f"value target mode must be one of {VALUE_TARGETS}, got {mode!r}")


class EpisodeReturns:
    """Remembers, per env, the replay rows of its running episode's HL transitions; when the
    episode ends, writes their ``G_t`` into the replay buffer's ``MC_KEY`` field (added as
    NaN). The buffer must hold all running episodes (``SACModule`` checks its capacity), so
    no row is overwritten before its episode ends."""

    def __init__(self, num_envs: int) -> None:
        self.rows: list[list[int]] = [[] for _ in range(num_envs)]

    def add(self, envs: torch.Tensor, rows: torch.Tensor) -> None:
        """Transitions just added: their envs (M,) and replay rows (M,), in time order per env."""
        for e, r in zip(envs.tolist(), rows.tolist(), strict=True):
            self.rows[e].append(r)

    def finish(self, envs: torch.Tensor, replay: ReplayBuffer, gamma: float) -> None:
        """The episodes of ``envs`` (E,) ended with the transitions added so far."""
        for e in envs.tolist():
            rows = torch.tensor([r for r in self.rows[e] if r >= 0], dtype=torch.long)
            self.rows[e] = []
            if len(rows) == 0:
                continue
            rows = rows.to(replay.device)
            replay.data[MC_KEY][rows] = discounted_returns(replay.data["reward"][rows], gamma)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [list(r) for r in self.rows]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = [list(r) for r in state["rows"]]
