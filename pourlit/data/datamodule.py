"""The LightningDataModule of skill learning: random H+1-step windows (``pourlit.data.windows``)
from a folder of rollout files, split by episode into training and validation.

A batch is a dict (B = batch size)::

    states    (B, H + 1, d_s) float32   raw; the model normalises
    actions   (B, H, d_a)     float32
    pad_mask  (B, H + 1)      float32   1 = real step, 0 = padding

Training windows are drawn anew every epoch, the same for any number of workers or processes;
validation uses ``val_windows`` fixed windows of the validation episodes (seed ``seed +
1000``, epoch 0). The training loader resumes exactly mid-epoch (``pourlit.data.loader``), and
neither loader draws from torch's global random generator, so resuming does not shift the
random numbers the model draws (docs/architecture.md).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch.utils.data import DataLoader

from pourlit.data.loader import ResumableDataLoader
from pourlit.data.rollout import Episode, RolloutFormatError, list_rollouts, read_episode
from pourlit.data.windows import WindowDataset, WindowSampler, collate_windows, dist_rank_world

VAL_SEED_OFFSET = 1000
"""Validation windows are drawn with seed ``seed + VAL_SEED_OFFSET`` (and epoch 0)."""

STD_MIN = 1e-2  # floor: near-constant dims (a resting cup's height) must not amplify noise
"""Lower clamp for per-dimension state standard deviations."""


ACTION_LABELS = ("actions", "expert_actions")


class SkippedRolloutWarning(UserWarning):
    """A bad rollout file was skipped because ``skip_bad_files=True``."""


class RolloutDataModule(L.LightningDataModule):
    """Random H+1-step windows from a folder of rollout files, for skill-prior learning.

    Reads every ``rollout_*.h5`` under ``data_dir`` (nested batch folders included; pourlit's
    layout and the seed project's, see :func:`pourlit.data.rollout.read_episode`) into memory,
    splits the episodes into train and validation sets and serves windows of them.

    ``state_dim`` and ``action_dim`` are known right after construction (one file is read), so
    LightningCLI can link them to the model with
    ``link_arguments("data.state_dim", "model.state_dim", apply_on="instantiate")``. Everything
    else is loaded once, on :meth:`setup` or on first use of a property that needs it.

    Bad files: by default the first unreadable or malformed file raises a
    :class:`~pourlit.data.rollout.RolloutFormatError` whose message starts with its path (files
    whose state or action size differs from the first file's are reported the same way). With
    ``skip_bad_files=True`` each bad file is reported once with a :class:`SkippedRolloutWarning`
    naming it and the reason, recorded in :attr:`skipped_files` and left out; :attr:`num_skipped`
    gives the count and :meth:`setup` prints it with ``rank_zero_info`` (``SkillPriorModule``
    logs it as ``data/skipped_files``).

    Distributed training: each process loads the data, computes the same split and statistics,
    and draws the same windows; process ``rank`` of ``world_size`` takes windows
    ``i % world_size == rank`` (:class:`~pourlit.data.windows.WindowSampler`). Window counts are
    rounded up so that every process gets the same number of batches.

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
        action_labels: which actions the windows carry: ``"actions"`` (what was executed) or
            ``"expert_actions"`` (the expert's intended actions before exploration noise, DART
            labels; files written without them are bad files).
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
        action_labels: str = "actions",
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
        if action_labels not in ACTION_LABELS:
            raise ValueError(f"action_labels must be one of {ACTION_LABELS}, got {action_labels!r}")
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
        self.action_labels = action_labels

        self.skipped_files: list[tuple[Path, str]] = []
        """(file, reason) for every bad file skipped (``skip_bad_files=True``)."""

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

    def _read(self, path: Path, check_dims: bool) -> Episode | None:
        """The episode in ``path``, or None for a bad file that ``skip_bad_files`` skips.

        Raises:
            RolloutFormatError: unreadable or empty, or (``check_dims``) its state or action
                size differs from the first valid file's.
        """
        try:
            ep = read_episode(path)
            if ep.length == 0:
                raise RolloutFormatError(path, "episode has no steps")
            if self.action_labels == "expert_actions" and ep.expert_actions is None:
                raise RolloutFormatError(
                    path,
                    "no traj0/expert_actions for action_labels='expert_actions' (written by "
                    "pourlit collect since 2026-12-03; recollect, or train on 'actions')",
                )
            if check_dims:
                for what, got, want in (
                    ("state", int(ep.states.shape[1]), self._state_dim),
                    ("action", int(ep.actions.shape[1]), self._action_dim),
                ):
                    if got != want:
                        raise RolloutFormatError(
                            path,
                            f"inconsistent {what} size: {got} in this file but {want} in "
                            f"{self._dims_file}; all files of a dataset must share state and "
                            f"action sizes",
                        )
        except RolloutFormatError as exc:
            if not self.skip_bad_files:
                raise
            self._skip(path, exc.problem)
            return None
        return ep

    def _probe_dims(self) -> tuple[int, int, Path]:
        """Read files in order until one is valid; return its (state_dim, action_dim, path)."""
        for path in self._files:
            ep = self._read(path, check_dims=False)
            if ep is None:
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
            ep = self._read(path, check_dims=True)
            if ep is None:
                continue
            actions = ep.expert_actions if self.action_labels == "expert_actions" else ep.actions
            # handover episodes (pourlit collect --learner): the expert's part only
            k = int(ep.attrs.get("expert_from", 0))
            episodes.append((path, ep.states[k:], actions[k:], ep.pad_mask[k:]))
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
        return dist_rank_world()

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
        # random numbers after a resume. The windows themselves use no torch RNG.
        cls = ResumableDataLoader if train else DataLoader
        return cls(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
            collate_fn=collate_windows,
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
        return self._loader(self._dataset("train", total, self.seed), sampler, self.seed, True)

    def val_dataloader(self) -> DataLoader:
        """Fixed validation windows (the same every epoch), ``val_windows`` split over ranks."""
        rank, world = self._rank_world()
        total = math.ceil(self.val_windows / world) * world
        sampler = WindowSampler(total, rank=rank, world_size=world, per_epoch=False)
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
