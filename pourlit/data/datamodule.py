"""LightningDataModule over a folder of rollout files: random H+1-step windows for skill learning.

A batch is a dict (B = batch size, H = horizon, d_s / d_a = state / action size)::

    states    (B, H + 1, d_s) float32   s_0 .. s_H (raw; the model normalises)
    actions   (B, H, d_a)     float32   a_0 .. a_{H-1}; a_t belongs with s_t
    pad_mask  (B, H + 1)      float32   1 = real step, 0 = padding

Windows follow the SPiRL reference (spirl.md, section 1): a window is H+1 consecutive steps of one
episode, the last action dropped. An episode with T >= H+1 steps has T - H windows (starts
0 .. T-H-1); a shorter episode counts as one window starting at 0 and is padded with zeros and
pad_mask 0 up to H+1 steps. Action a_t is padding whenever step t is (pad_mask[t] == 0). Steps a
file itself marks as padding (``pad_mask`` 0 in the file, seed-project data) also carry zero states
and actions in batches.

Determinism: window ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)`` (and the training
episodes): per epoch, all (episode, start) pairs are drawn in one vectorised call from
``numpy.random.default_rng([seed, e])``; the episode is chosen with probability proportional to
its number of windows and the start uniformly among its windows. The order of data therefore
does not depend on ``num_workers``, on process count or on how often the loader was rebuilt, and
an epoch can be reproduced from its number alone. Validation uses a fixed set of
``val_windows`` windows drawn the same way from the validation episodes with seed ``seed + 1000``
and epoch 0, identical every epoch.

Exact mid-epoch resume: the training loader is a :class:`ResumableDataLoader`, which counts the
batches it has delivered in the current epoch and implements ``state_dict``/``load_state_dict``.
Lightning (>= 2.2) stores that state in every checkpoint and hands it back before the first batch
of a resumed run, and the loader then starts the interrupted epoch right after the last delivered
batch: its :class:`WindowSampler` begins at an offset, so the skipped windows are never loaded.
Neither loader draws from torch's global random generator (each has its own ``generator``), so
resuming does not shift the random numbers the model draws.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from pourlit.data.rollout import RolloutFormatError, list_rollouts, read_episode

VAL_SEED_OFFSET = 1000
"""Validation windows are drawn with seed ``seed + VAL_SEED_OFFSET`` (and epoch 0)."""

STD_MIN = 1e-2  # floor: near-constant dims (a resting cup's height) must not amplify noise
"""Lower clamp for per-dimension state standard deviations."""


class SkippedRolloutWarning(UserWarning):
    """A bad rollout file was skipped because ``skip_bad_files=True``."""


# ----------------------------------------------------------------------------- dataset


class WindowDataset(Dataset[dict[str, torch.Tensor]]):
    """Map-style dataset of random H+1-step windows, ``num_windows`` per epoch.

    Index encoding: the dataset is indexed by a *global* window index
    ``g = epoch * num_windows + i`` (this is what :class:`WindowSampler` yields), so the epoch
    travels with the index and worker processes (persistent or not) need no epoch state.
    ``len(dataset)`` is ``num_windows``, the windows of one epoch; indices ``0 .. num_windows-1``
    are epoch 0.

    Args:
        episodes: per episode a tuple ``(states (T, d_s), actions (T, d_a), pad_mask (T,))``;
            every T >= 1 and all episodes share d_s and d_a.
        horizon: H; windows have H+1 states and H actions.
        num_windows: windows per epoch.
        seed: non-negative sampling seed.
        state_mean: optional (d_s,) mean subtracted from states.
        state_std: optional (d_s,) std dividing states (after the mean is subtracted).
    """

    def __init__(
        self,
        episodes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
        horizon: int,
        num_windows: int,
        seed: int,
        state_mean: np.ndarray | None = None,
        state_std: np.ndarray | None = None,
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
        if state_mean is not None or state_std is not None:
            mean = np.zeros(states.shape[1]) if state_mean is None else state_mean
            std = np.ones(states.shape[1]) if state_std is None else state_std
            states = ((states - mean) / std).astype(np.float32)
        states[~real] = 0.0
        actions = np.concatenate([a for _, a, _ in episodes]).astype(np.float32)
        actions[~real] = 0.0
        self.states = states
        """(N, d_s) float32 states of all episodes, normalised if stats were given."""
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
        episode = np.searchsorted(self._cum_counts, flat, side="right")
        start = flat - (self._cum_counts[episode] - self.window_counts[episode])
        self._plan_cache = (int(epoch), episode, start)
        return episode, start

    def window(self, episode: int, start: int) -> dict[str, torch.Tensor]:
        """The window of ``episode`` beginning at step ``start``, zero-padded past its end.

        Returns:
            ``{"states": (H+1, d_s), "actions": (H, d_a), "pad_mask": (H+1,)}``, float32.
        """
        h = self.horizon
        row = int(self.offsets[episode]) + int(start)
        n = min(h + 1, int(self.lengths[episode]) - int(start))
        states = np.zeros((h + 1, self.states.shape[1]), np.float32)
        actions = np.zeros((h, self.actions.shape[1]), np.float32)
        pad = np.zeros(h + 1, np.float32)
        states[:n] = self.states[row : row + n]
        pad[:n] = self.pad_mask[row : row + n]
        m = min(h, n)
        actions[:m] = self.actions[row : row + m]
        return {
            "states": torch.from_numpy(states),
            "actions": torch.from_numpy(actions),
            "pad_mask": torch.from_numpy(pad),
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Window for the global index ``epoch * num_windows + i`` (see the class docstring)."""
        epoch, i = divmod(int(index), self.num_windows)
        episode, start = self.plan(epoch)
        return self.window(int(episode[i]), int(start[i]))


# ----------------------------------------------------------------------------- sampler


class WindowSampler(DistributedSampler):
    """Yields this process's share of one epoch's global window indices.

    For epoch ``e`` (set by :meth:`set_epoch`, which Lightning calls at the start of every
    epoch) the epoch's indices are ``e * num_windows + i`` for ``i`` in ``0 .. num_windows-1``;
    this process yields those with ``i % world_size == rank``, in increasing ``i``. The shares of
    all ranks are disjoint and together make the whole epoch. With ``per_epoch=False`` (used for
    validation) the epoch is ignored and the indices are always those of epoch 0.

    Why a DistributedSampler subclass: in Lightning 2.6
    (``lightning/pytorch/trainer/connectors/data_connector.py``), ``_requires_distributed_sampler``
    is true when ``use_distributed_sampler`` is on (the default), the run is distributed, the
    loader's sampler is *not* a ``DistributedSampler`` and the dataset is not iterable. Then
    ``_get_distributed_sampler`` replaces a ``RandomSampler``/``SequentialSampler`` with a
    ``DistributedSampler`` over the dataset, and wraps ANY OTHER sampler in a
    ``DistributedSamplerWrapper`` that shards (and reshuffles with its own seed) what the sampler
    yields. A plain custom sampler that already shards by rank would thus be sharded twice. Being
    a ``DistributedSampler`` makes Lightning leave the loader untouched, whatever the value of
    ``use_distributed_sampler``. Lightning calls ``set_epoch`` on ``loader.sampler`` (and
    ``loader.batch_sampler.sampler``) through ``_set_sampler_epoch`` before every training epoch
    (``fit_loop.on_advance_start``) and before validation, with the epoch number.

    Mid-epoch resume: :meth:`skip_next` makes the next iteration (only) start a given number of
    indices into this process's share; :class:`ResumableDataLoader` uses it so that the batches a
    checkpointed run already trained on are skipped without being loaded. ``len()`` is always the
    whole share, which is what Lightning expects (it counts the skipped batches as done).

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
        default_rank, default_world = _dist_rank_world()
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
        self.epoch_set = False
        """True once :meth:`set_epoch` has been called (e.g. by Lightning)."""
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose windows the next iteration yields."""
        super().set_epoch(int(epoch))
        self.epoch_set = True

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


def _dist_rank_world() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed if it is initialised, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# ----------------------------------------------------------------------------- loader


class ResumableDataLoader(DataLoader):
    """Training DataLoader over a :class:`WindowSampler` that resumes exactly mid-epoch.

    It counts the batches it has delivered in the current epoch (a batch counts once the loader
    has handed it over, so worker prefetching does not count) and implements the stateful
    interface that Lightning looks for (``state_dict``/``load_state_dict``, the
    ``lightning.fabric.utilities.types._Stateful`` protocol)::

        state_dict() -> {"epoch": e, "batches_delivered": k}

    ``e`` is the sampler's epoch when the current (or latest) iteration began and ``k`` the
    batches this process has received from it. After :meth:`load_state_dict`, the next iteration,
    if it is an iteration of epoch ``e`` (the sampler's epoch when its first batch is requested),
    starts at batch ``k``: the sampler is told to leave out its first ``k * batch_size`` indices
    (:meth:`WindowSampler.skip_next`), so the skipped windows are neither loaded nor sent to
    workers. An iteration of another epoch ignores and drops the loaded state (e.g. a checkpoint
    written at the end of epoch ``e`` resumes at epoch ``e + 1`` from its first batch). ``len()``
    stays the whole epoch, as Lightning expects: its training loop counts the skipped batches as
    already done.

    How Lightning 2.6 uses it (``lightning/pytorch/loops/fit_loop.py``): every checkpoint stores
    ``fit_loop.on_save_checkpoint()``, which adds ``CombinedLoader._state_dicts()``, the
    ``state_dict()`` of each training loader that is ``_Stateful``, under
    ``loops/fit_loop/state_dict/combined_loader``. On resume, ``FitLoop.on_load_checkpoint`` keeps
    that list and ``FitLoop.setup_data`` passes it to ``CombinedLoader._load_state_dicts`` (only
    when the loop is restarting) right after the training loader was requested and before the
    first ``iter()``; Lightning then calls ``set_epoch`` and fetches the remaining batches.
    Caveat (Lightning issue 20550): if ``trainer.estimated_stepping_batches`` is read before the
    checkpoint is restored (e.g. in ``configure_optimizers``), ``setup_data`` runs early and the
    state is never loaded, so the interrupted epoch restarts from its first batch.

    Distributed training: each process counts its own batches; a checkpoint holds rank zero's
    count, which is every rank's count because all ranks get the same number of batches
    (:class:`RolloutDataModule` rounds the epoch up accordingly) and skip their own shares.

    Args:
        dataset: the dataset ``sampler`` indexes.
        sampler: the :class:`WindowSampler` (required: skipping happens there).
        **kwargs: the other :class:`~torch.utils.data.DataLoader` arguments; ``batch_size``
            must not be None.
    """

    def __init__(self, dataset: Dataset, *, sampler: WindowSampler, **kwargs: Any) -> None:
        if not isinstance(sampler, WindowSampler):
            raise TypeError(
                f"ResumableDataLoader needs a WindowSampler, got {type(sampler).__name__}"
            )
        super().__init__(dataset, sampler=sampler, **kwargs)
        if self.batch_size is None:
            raise ValueError("ResumableDataLoader needs a batch_size")
        self._epoch = int(sampler.epoch)
        self._delivered = 0
        self._to_resume: tuple[int, int] | None = None

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches_delivered"}`` of the current iteration; a loaded state that no
        iteration has used yet is returned as it was loaded."""
        epoch, delivered = (
            self._to_resume if self._to_resume is not None else (self._epoch, self._delivered)
        )
        return {"epoch": epoch, "batches_delivered": delivered}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the next iteration of epoch ``state_dict["epoch"]`` after
        ``state_dict["batches_delivered"]`` batches (see the class docstring).

        Raises:
            ValueError: keys missing or negative values.
        """
        missing = {"epoch", "batches_delivered"} - state_dict.keys()
        if missing:
            raise ValueError(f"ResumableDataLoader state_dict lacks {sorted(missing)}")
        epoch, delivered = int(state_dict["epoch"]), int(state_dict["batches_delivered"])
        if epoch < 0 or delivered < 0:
            raise ValueError(f"epoch and batches_delivered must be >= 0, got {epoch}, {delivered}")
        self._to_resume = (epoch, delivered)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._counted()

    def _counted(self) -> Iterator[Any]:
        # A generator: this runs on the first next(), after Lightning's set_epoch.
        sampler = self.sampler
        assert isinstance(sampler, WindowSampler) and self.batch_size is not None
        epoch, skip = int(sampler.epoch), 0
        if self._to_resume is not None:
            saved_epoch, delivered = self._to_resume
            self._to_resume = None
            if saved_epoch == epoch:
                skip = min(delivered, len(self))
        self._epoch, self._delivered = epoch, skip
        sampler.skip_next(skip * self.batch_size)
        for batch in super().__iter__():
            self._delivered += 1
            yield batch


# ----------------------------------------------------------------------------- datamodule


class RolloutDataModule(L.LightningDataModule):
    """Random H+1-step windows from a folder of rollout files, for skill-prior learning.

    Reads every ``rollout_*.h5`` under ``data_dir`` (nested batch folders included; pourlit's
    layout and the seed project's, including its state-only image mode; see
    :func:`pourlit.data.rollout.read_episode`) into memory, splits the episodes into train and
    validation sets and serves windows as described in this module's docstring.

    ``state_dim`` and ``action_dim`` are known right after construction (one file is read), so
    LightningCLI can link them to the model with
    ``link_arguments("data.state_dim", "model.state_dim", apply_on="instantiate")``. Everything
    else is loaded once, on :meth:`setup` or on first use of a property that needs it.

    Bad files: by default the first unreadable or malformed file raises a
    :class:`~pourlit.data.rollout.RolloutFormatError` whose message starts with its path (files
    whose state or action size differs from the first file's are reported the same way). With
    ``skip_bad_files=True`` each bad file is reported once with a :class:`SkippedRolloutWarning`
    naming it and the reason, recorded in :attr:`skipped_files` and left out; :attr:`num_skipped`
    gives the count and :meth:`setup` prints it with ``rank_zero_info``. (The datamodule does not
    call ``self.log``; a LightningModule that wants ``data/skipped_files`` in its logs can log
    ``trainer.datamodule.num_skipped``.)

    Distributed training: each process loads the data, computes the same split and statistics,
    and draws the same windows; process ``rank`` of ``world_size`` takes windows
    ``i % world_size == rank`` (see :class:`WindowSampler`). Window counts are rounded up so that
    every process gets the same number of batches.

    Args:
        data_dir: folder of rollout files (searched recursively), or a single rollout file.
        horizon: skill horizon H; windows hold H+1 states and H actions.
        batch_size: windows per batch (per process).
        windows_per_epoch: training windows per epoch over all processes; rounded up to a
            multiple of ``batch_size * world_size`` so every batch is full.
        val_windows: fixed validation windows over all processes; rounded up to a multiple of
            ``world_size``.
        val_fraction: fraction of episodes held out for validation, in [0, 1); at least one
            episode (and at least one left for training) when there are two or more episodes. A
            single episode is used for both, with a warning.
        split_seed: seed of the episode-level train/validation split.
        seed: seed of window sampling (validation uses ``seed + 1000``).
        num_workers: DataLoader worker processes (persistent when > 0).
        normalize_states: compute per-dimension mean and std of the training episodes' real
            steps (std clamped to >= 0.01) and expose them as ``state_mean``/``state_std`` for
            the model, which applies them (batches always carry raw states).
        skip_bad_files: warn about and skip bad files instead of raising.
    """

    def __init__(
        self,
        data_dir: str,
        horizon: int = 10,
        batch_size: int = 64,
        windows_per_epoch: int = 6400,
        val_windows: int = 1280,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        seed: int = 0,
        num_workers: int = 0,
        normalize_states: bool = False,
        skip_bad_files: bool = False,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("horizon", horizon, 1),
            ("batch_size", batch_size, 1),
            ("windows_per_epoch", windows_per_epoch, 1),
            ("val_windows", val_windows, 1),
            ("split_seed", split_seed, 0),
            ("seed", seed, 0),
            ("num_workers", num_workers, 0),
        ):
            if int(value) < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.horizon = int(horizon)
        self.batch_size = int(batch_size)
        self.windows_per_epoch = int(windows_per_epoch)
        self.val_windows = int(val_windows)
        self.val_fraction = float(val_fraction)
        self.split_seed = int(split_seed)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.normalize_states = bool(normalize_states)
        self.skip_bad_files = bool(skip_bad_files)

        self.skipped_files: list[tuple[Path, str]] = []
        """(file, reason) for every bad file skipped (``skip_bad_files=True``)."""
        self.train_sampler: WindowSampler | None = None
        """Sampler of the most recent :meth:`train_dataloader`."""
        self.val_sampler: WindowSampler | None = None
        """Sampler of the most recent :meth:`val_dataloader`."""

        self._files = self._list_files()
        self._env_config: dict | None = None
        self._state_dim, self._action_dim, self._dims_file = self._probe_dims()
        self._train: list[tuple[Path, np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._val: list[tuple[Path, np.ndarray, np.ndarray, np.ndarray]] = []
        self._mean = np.zeros(self._state_dim, np.float32)
        self._std = np.ones(self._state_dim, np.float32)
        self._stats_from_checkpoint = False

    # ------------------------------------------------------------------ discovery

    def _list_files(self) -> list[Path]:
        try:
            files = list_rollouts(self.data_dir)
        except FileNotFoundError:
            raise ValueError(f"{self.data_dir}: rollout data folder does not exist") from None
        if not files:
            raise ValueError(
                f"{self.data_dir}: no rollout files (rollout_*.h5) found in this folder or below"
            )
        return files

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped_files.append((path, reason))
        warnings.warn(
            f"skipping bad rollout file {path}: {reason}", SkippedRolloutWarning, stacklevel=3
        )

    def _probe_dims(self) -> tuple[int, int, Path]:
        """Read files in order until one is valid; return its (state_dim, action_dim, path)."""
        for path in self._files:
            try:
                ep = read_episode(path)
                if ep.length == 0:
                    raise RolloutFormatError(path, "episode has no steps")
            except RolloutFormatError as exc:
                if not self.skip_bad_files:
                    raise
                self._skip(path, exc.problem)
                continue
            env_config = ep.attrs.get("env_config")
            self._env_config = env_config if isinstance(env_config, dict) else None
            return int(ep.states.shape[1]), int(ep.actions.shape[1]), path
        raise ValueError(
            f"{self.data_dir}: none of the {len(self._files)} rollout files is valid "
            f"(all skipped as bad files)"
        )

    # ------------------------------------------------------------------ loading

    def _ensure_loaded(self) -> None:
        """Read all episodes, split them and compute statistics (once)."""
        if self._train is not None:
            return
        already_skipped = {p for p, _ in self.skipped_files}
        episodes: list[tuple[Path, np.ndarray, np.ndarray, np.ndarray]] = []
        for path in self._files:
            if path in already_skipped:
                continue
            try:
                ep = read_episode(path)
                if ep.length == 0:
                    raise RolloutFormatError(path, "episode has no steps")
                d_s, d_a = int(ep.states.shape[1]), int(ep.actions.shape[1])
                if d_s != self._state_dim:
                    raise RolloutFormatError(
                        path,
                        f"inconsistent state size: {d_s} in this file but {self._state_dim} in "
                        f"{self._dims_file}; all files of a dataset must share state and action "
                        f"sizes",
                    )
                if d_a != self._action_dim:
                    raise RolloutFormatError(
                        path,
                        f"inconsistent action size: {d_a} in this file but {self._action_dim} in "
                        f"{self._dims_file}; all files of a dataset must share state and action "
                        f"sizes",
                    )
            except RolloutFormatError as exc:
                if not self.skip_bad_files:
                    raise
                self._skip(path, exc.problem)
                continue
            episodes.append((path, ep.states, ep.actions, ep.pad_mask))
        if not episodes:  # pragma: no cover - the probe guarantees one valid file
            raise ValueError(f"{self.data_dir}: no valid rollout files")

        n = len(episodes)
        if n == 1:
            warnings.warn(
                f"{self.data_dir}: only one valid episode ({episodes[0][0]}); it is used for both "
                f"training and validation",
                UserWarning,
                stacklevel=2,
            )
            train, val = episodes, episodes
        else:
            n_val = min(max(1, round(self.val_fraction * n)), n - 1)
            order = np.random.default_rng(self.split_seed).permutation(n)
            val_idx = set(order[:n_val].tolist())
            train = [e for i, e in enumerate(episodes) if i not in val_idx]
            val = [e for i, e in enumerate(episodes) if i in val_idx]
        self._train, self._val = train, val
        if self.normalize_states and not self._stats_from_checkpoint:
            self._mean, self._std = _state_stats([(s, p) for _, s, _, p in train])

    # ------------------------------------------------------------------ lightning hooks

    def setup(self, stage: str | None = None) -> None:
        """Load all episodes (once) and report the dataset on rank zero."""
        self._ensure_loaded()
        rank_zero_info(
            f"RolloutDataModule: {self.data_dir}: {self.num_train_episodes} train / "
            f"{self.num_val_episodes} val episodes, mean length {self.mean_episode_length:.1f}, "
            f"state_dim {self.state_dim}, action_dim {self.action_dim}, "
            f"skipped files {self.num_skipped}"
        )

    def _rank_world(self) -> tuple[int, int]:
        if self.trainer is not None:
            return int(self.trainer.global_rank), int(self.trainer.world_size)
        return _dist_rank_world()

    def _dataset(self, which: str, num_windows: int, seed: int) -> WindowDataset:
        self._ensure_loaded()
        episodes = self._train if which == "train" else self._val
        assert episodes is not None
        # Batches carry raw states: the model owns the normalisation (its buffers travel in the
        # checkpoint and are applied identically at training and at inference).
        return WindowDataset(
            [(s, a, p) for _, s, a, p in episodes], self.horizon, num_windows, seed
        )

    def _loader(
        self, dataset: WindowDataset, sampler: WindowSampler, seed: int, train: bool
    ) -> DataLoader:
        # A private generator: DataLoader draws each iterator's worker base seed from
        # ``generator`` (torch's global generator when None), which would shift the model's
        # random numbers after a mid-epoch resume. The windows themselves use no torch RNG.
        cls = ResumableDataLoader if train else DataLoader
        return cls(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
            generator=torch.Generator().manual_seed(seed),
        )

    def train_dataloader(self) -> ResumableDataLoader:
        """Training windows: ``windows_per_epoch`` (rounded up) per epoch, split over ranks.

        The sampler's epoch starts at the attached trainer's ``current_epoch`` (0 without one);
        Lightning then calls ``set_epoch`` every epoch. Without a trainer, call
        ``loader.sampler.set_epoch(e)`` yourself. The loader is a :class:`ResumableDataLoader`,
        so Lightning checkpoints its position and a resumed run continues mid-epoch.
        """
        rank, world = self._rank_world()
        per_rank = math.ceil(self.windows_per_epoch / world)
        per_rank = math.ceil(per_rank / self.batch_size) * self.batch_size
        total = per_rank * world
        sampler = WindowSampler(total, rank=rank, world_size=world, per_epoch=True)
        if self.trainer is not None:
            sampler.set_epoch(int(self.trainer.current_epoch))
        self.train_sampler = sampler
        return self._loader(self._dataset("train", total, self.seed), sampler, self.seed, True)

    def val_dataloader(self) -> DataLoader:
        """Fixed validation windows (the same every epoch), ``val_windows`` split over ranks."""
        rank, world = self._rank_world()
        total = math.ceil(self.val_windows / world) * world
        sampler = WindowSampler(total, rank=rank, world_size=world, per_epoch=False)
        self.val_sampler = sampler
        val_seed = self.seed + VAL_SEED_OFFSET
        return self._loader(self._dataset("val", total, val_seed), sampler, val_seed, False)

    def state_dict(self) -> dict[str, Any]:
        """Normalisation statistics, saved by Lightning in checkpoints.

        Returns:
            ``{"normalize_states": bool, "state_mean": (d_s,) float32 tensor,
            "state_std": (d_s,) float32 tensor}``.
        """
        return {
            "normalize_states": self.normalize_states,
            "state_mean": self.state_mean,
            "state_std": self.state_std,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Adopt normalisation statistics from :meth:`state_dict` (e.g. when resuming).

        The statistics replace the ones computed from the data when both this datamodule and the
        saved one normalise. If only one of them normalises, a warning is given and this
        datamodule keeps its own behaviour.

        Raises:
            ValueError: keys missing, or the statistics' size differs from ``state_dim``.
        """
        missing = {"normalize_states", "state_mean", "state_std"} - state_dict.keys()
        if missing:
            raise ValueError(f"RolloutDataModule state_dict lacks {sorted(missing)}")
        mean = torch.as_tensor(state_dict["state_mean"]).detach().cpu().numpy()
        std = torch.as_tensor(state_dict["state_std"]).detach().cpu().numpy()
        if mean.shape != (self._state_dim,) or std.shape != (self._state_dim,):
            raise ValueError(
                f"saved state statistics have shapes {mean.shape} / {std.shape} but the data in "
                f"{self.data_dir} has state_dim {self._state_dim}"
            )
        saved_norm = bool(state_dict["normalize_states"])
        if saved_norm != self.normalize_states:
            warnings.warn(
                f"checkpoint was saved with normalize_states={saved_norm} but this datamodule has "
                f"normalize_states={self.normalize_states}; keeping the current setting",
                UserWarning,
                stacklevel=2,
            )
            return
        if self.normalize_states:
            self._mean = mean.astype(np.float32)
            self._std = np.maximum(std.astype(np.float32), STD_MIN)
            self._stats_from_checkpoint = True

    # ------------------------------------------------------------------ properties

    @property
    def state_dim(self) -> int:
        """State size d_s (from the first valid file)."""
        return self._state_dim

    @property
    def env_config(self) -> dict | None:
        """The env config stored in the first valid file (None for the seed project's files)."""
        return self._env_config

    @property
    def action_dim(self) -> int:
        """Action size d_a (from the first valid file)."""
        return self._action_dim

    @property
    def state_mean(self) -> torch.Tensor:
        """(d_s,) float32 mean subtracted from states; zeros unless ``normalize_states``."""
        if self.normalize_states:
            self._ensure_loaded()
        return torch.from_numpy(self._mean.copy())

    @property
    def state_std(self) -> torch.Tensor:
        """(d_s,) float32 std dividing states; ones unless ``normalize_states``."""
        if self.normalize_states:
            self._ensure_loaded()
        return torch.from_numpy(self._std.copy())

    @property
    def num_skipped(self) -> int:
        """Number of bad files skipped so far (complete after :meth:`setup`)."""
        return len(self.skipped_files)

    @property
    def train_files(self) -> list[Path]:
        """Files of the training episodes, sorted."""
        self._ensure_loaded()
        assert self._train is not None
        return [p for p, *_ in self._train]

    @property
    def val_files(self) -> list[Path]:
        """Files of the validation episodes, sorted."""
        self._ensure_loaded()
        return [p for p, *_ in self._val]

    @property
    def num_train_episodes(self) -> int:
        """Number of training episodes."""
        return len(self.train_files)

    @property
    def num_val_episodes(self) -> int:
        """Number of validation episodes."""
        return len(self.val_files)

    @property
    def mean_episode_length(self) -> float:
        """Mean steps per loaded episode (train and validation, each episode once)."""
        self._ensure_loaded()
        assert self._train is not None
        unique = {p: len(s) for p, s, _, _ in [*self._train, *self._val]}
        return float(np.mean(list(unique.values())))


def _state_stats(
    episodes: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std (clamped to >= STD_MIN) over real steps.

    Args:
        episodes: ``(states (T, d_s), pad_mask (T,))`` per episode.

    Returns:
        ``(mean (d_s,), std (d_s,))`` float32. Identity (zeros, ones) if no step is real.
    """
    rows = np.concatenate([s[p > 0] for s, p in episodes]).astype(np.float64)
    if len(rows) == 0:
        d = episodes[0][0].shape[1]
        return np.zeros(d, np.float32), np.ones(d, np.float32)
    mean = rows.mean(axis=0)
    std = np.maximum(rows.std(axis=0), STD_MIN)
    return mean.astype(np.float32), std.astype(np.float32)
