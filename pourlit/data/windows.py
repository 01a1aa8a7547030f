"""Random H+1-step windows of episodes, the skill learner's samples, and the sampler that deals
them out per epoch and per process.

A window (H = horizon, d_s / d_a = state / action size)::

    states    (H + 1, d_s) float32   s_0 .. s_H
    actions   (H, d_a)     float32   a_0 .. a_{H-1}; a_t belongs with s_t
    pad_mask  (H + 1,)     float32   1 = real step, 0 = padding
    window    ()           int64     the window's id in [0, W), W = all starts of all episodes

is H+1 consecutive steps of one episode, the last action dropped (SPiRL's reference). An
episode with T >= H+1 steps has T - H windows (starts 0 .. T-H-1); a shorter one counts as one
window starting at 0, zero-padded with pad_mask 0 up to H+1 steps. Steps a file marks as
padding (``pad_mask`` 0, seed-project data) carry zero states and actions too.

Determinism: window ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: all of an
epoch's (episode, start) pairs are drawn in one call from ``numpy.random.default_rng([seed,
e])``, an episode with probability proportional to its window count and a start uniformly
among its windows. The data order therefore does not depend on ``num_workers``, the number of
processes or how often a loader is rebuilt.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate
from torch.utils.data.distributed import DistributedSampler


class WindowDataset(Dataset[dict[str, torch.Tensor]]):
    """Map-style dataset of random H+1-step windows, ``num_windows`` per epoch.

    It is indexed by a *global* window index ``g = epoch * num_windows + i`` (what
    :class:`WindowSampler` yields), so the epoch travels with the index and worker processes
    need no epoch state. ``len(dataset)`` is ``num_windows``, one epoch. A DataLoader fetches
    a whole batch in one gather (``__getitems__``); give it ``collate_fn=collate_windows``.

    Args:
        episodes: per episode ``(states (T, d_s), actions (T, d_a), pad_mask (T,))``; every
            T >= 1 and all episodes share d_s and d_a.
        horizon: H; windows have H+1 states and H actions.
        num_windows: windows per epoch.
        seed: non-negative sampling seed.
    """

    def __init__(
        self,
        episodes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
        horizon: int,
        num_windows: int,
        seed: int,
    ) -> None:
        if not episodes:
            raise ValueError("WindowDataset needs at least one episode")
        if horizon < 1 or num_windows < 1 or seed < 0:
            raise ValueError(
                f"need horizon >= 1, num_windows >= 1, seed >= 0; "
                f"got {horizon}, {num_windows}, {seed}"
            )
        self.horizon = int(horizon)
        self.num_windows = int(num_windows)
        self.seed = int(seed)
        lengths = np.array([len(s) for s, _, _ in episodes], dtype=np.int64)
        if np.any(lengths < 1):
            raise ValueError("every episode needs at least one step")
        self.lengths = lengths
        """(E,) int64 steps per episode."""
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        """(E,) int64 row of each episode's first step in the flat arrays."""
        self.pad_mask = np.concatenate([p for _, _, p in episodes]).astype(np.float32)
        """(N,) float32 pad mask of all steps, N = sum of T."""
        real = self.pad_mask > 0
        states = np.concatenate([s for s, _, _ in episodes]).astype(np.float32)
        states[~real] = 0.0
        actions = np.concatenate([a for _, a, _ in episodes]).astype(np.float32)
        actions[~real] = 0.0
        self.states = states
        """(N, d_s) float32 states of all episodes."""
        self.actions = actions
        """(N, d_a) float32 actions of all episodes."""
        self.window_counts = np.maximum(lengths - self.horizon, 1)
        """(E,) int64 number of windows per episode (sampling weight)."""
        self._cum_counts = np.cumsum(self.window_counts)
        self._plan_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        """Windows per epoch."""
        return self.num_windows

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The windows of ``epoch``: ``(episode (num_windows,) int64, start (num_windows,) int64)``.

        Drawn in one call from ``default_rng([seed, epoch])``: a uniform index over all windows of
        all episodes, i.e. an episode with probability proportional to its window count and a
        uniform start within it. Cached for the most recent epoch.
        """
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1], self._plan_cache[2]
        rng = np.random.default_rng([self.seed, int(epoch)])
        flat = rng.integers(0, int(self._cum_counts[-1]), size=self.num_windows, dtype=np.int64)
        episode, start = self.locate(flat)
        self._plan_cache = (int(epoch), episode, start)
        return episode, start

    @property
    def total_windows(self) -> int:
        """W, the number of distinct windows (all starts of all episodes)."""
        return int(self._cum_counts[-1])

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(episode, start)`` of window ids in ``[0, W)``: window ``w`` is start
        ``w - c_{e-1}`` of the episode e with ``c_{e-1} <= w < c_e``, c the cumulative window
        counts (the flat index that :meth:`plan` draws)."""
        ids = np.asarray(ids, dtype=np.int64)
        episode = np.searchsorted(self._cum_counts, ids, side="right")
        return episode, ids - (self._cum_counts[episode] - self.window_counts[episode])

    def windows(self, ids: np.ndarray) -> dict[str, torch.Tensor]:
        """The windows with ids ``ids`` (B,), zero-padded past their episodes' ends.

        Returns:
            ``{"states": (B, H+1, d_s), "actions": (B, H, d_a), "pad_mask": (B, H+1),
            "window": (B,) int64}``; float32 except the ids.
        """
        h = self.horizon
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        episode, start = self.locate(ids)
        steps = np.arange(h + 1)
        real = steps[None, :] < (self.lengths[episode] - start)[:, None]  # (B, H+1)
        rows = np.where(real, (self.offsets[episode] + start)[:, None] + steps[None, :], 0)
        states = np.where(real[..., None], self.states[rows], 0.0).astype(np.float32)
        actions = np.where(real[:, :h, None], self.actions[rows[:, :h]], 0.0).astype(np.float32)
        pad = np.where(real, self.pad_mask[rows], 0.0).astype(np.float32)
        return {
            "states": torch.from_numpy(states),
            "actions": torch.from_numpy(actions),
            "pad_mask": torch.from_numpy(pad),
            "window": torch.from_numpy(ids),
        }

    def ids(self, indices: Sequence[int]) -> np.ndarray:
        """Window ids of global indices ``epoch * num_windows + i`` (see the class docstring)."""
        epoch, i = np.divmod(np.asarray(indices, dtype=np.int64).reshape(-1), self.num_windows)
        out = np.empty_like(i)
        for e in np.unique(epoch):
            sel = epoch == e
            episode, start = self.plan(int(e))
            ep = episode[i[sel]]
            out[sel] = self._cum_counts[ep] - self.window_counts[ep] + start[i[sel]]
        return out

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A whole batch in one gather (the DataLoader calls this for a batch's indices):
        :meth:`windows` of their ids; :func:`collate_windows` passes it through."""
        return self.windows(self.ids(indices))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Window for the global index ``epoch * num_windows + i`` (see the class docstring),
        as :meth:`windows` gives it without the batch dimension; ``"window"`` is its id."""
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


def collate_windows(batch: dict[str, torch.Tensor] | list) -> Any:
    """The DataLoader's collate function: a batch :meth:`WindowDataset.__getitems__` already
    built passes as it is; a list of single windows is stacked as ``default_collate`` does."""
    return batch if isinstance(batch, dict) else default_collate(batch)


class WindowSampler(DistributedSampler):
    """Yields this process's share of one epoch's global window indices.

    For epoch ``e`` (:meth:`set_epoch`; Lightning calls it before every epoch) the indices are
    ``e * num_windows + i``, and this process yields those with ``i % world_size == rank``, in
    increasing ``i``: the ranks' shares are disjoint and together make the epoch. With
    ``per_epoch=False`` (validation) the indices are always epoch 0's.

    It subclasses ``DistributedSampler`` because Lightning (``use_distributed_sampler``, on by
    default) wraps any other sampler of a distributed run in a ``DistributedSamplerWrapper``,
    which would shard the already sharded indices again; a ``DistributedSampler`` is left as is.

    :meth:`skip_next` makes the next iteration only start a number of indices into the share
    (mid-epoch resume, ``pourlit.data.loader``); ``len()`` stays the whole share.

    Args:
        num_windows: windows per epoch (all ranks together).
        rank: this process's rank; default from ``torch.distributed`` if initialised, else 0.
        world_size: number of processes; default from ``torch.distributed``, else 1.
        per_epoch: False to ignore the epoch (fixed validation windows).
    """

    def __init__(
        self,
        num_windows: int,
        rank: int | None = None,
        world_size: int | None = None,
        per_epoch: bool = True,
    ) -> None:
        default_rank, default_world = dist_rank_world()
        rank = default_rank if rank is None else int(rank)
        world_size = default_world if world_size is None else int(world_size)
        if num_windows < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need num_windows >= 1 and 0 <= rank < world_size, "
                f"got {num_windows}, rank {rank}, world_size {world_size}"
            )
        super().__init__(
            range(num_windows), num_replicas=world_size, rank=rank, shuffle=False, drop_last=False
        )
        self.num_windows = int(num_windows)
        self.per_epoch = per_epoch
        self._skip = 0

    def skip_next(self, count: int) -> None:
        """Make the next iteration (only) leave out the first ``count`` indices of this
        process's share of the epoch; later iterations yield the whole share again."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self._skip = int(count)

    def __iter__(self) -> Iterator[int]:
        base = self.epoch * self.num_windows if self.per_epoch else 0
        skip, self._skip = self._skip, 0
        first = base + self.rank + skip * self.num_replicas
        return iter(range(first, base + self.num_windows, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_windows, self.num_replicas))


def dist_rank_world() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed if it is initialised, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
