"""The training DataLoader that resumes exactly mid-epoch (docs/architecture.md, "Exact
resume of skill learning")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset

from pourlit.data.windows import WindowSampler, collate_windows


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`~pourlit.data.windows.WindowSampler` that counts the batches
    it has handed over in the current epoch and implements the stateful interface Lightning
    saves in every checkpoint and restores before a resumed run's first batch::

        state_dict() -> {"epoch": e, "batches_delivered": k}

    After :meth:`load_state_dict`, the next iteration, if it is one of epoch ``e`` (the
    sampler's epoch when its first batch is requested), starts at batch ``k``: the sampler
    leaves out its first ``k * batch_size`` indices, so the skipped windows are never loaded.
    An iteration of another epoch drops the loaded state (a checkpoint from the end of epoch
    ``e`` resumes at epoch ``e + 1``'s first batch). ``len()`` stays the whole epoch: Lightning
    counts the skipped batches as done. In distributed training every rank resumes from rank
    zero's count, which is every rank's (all ranks get the same number of batches).

    Args:
        dataset: the dataset ``sampler`` indexes.
        sampler: the :class:`~pourlit.data.windows.WindowSampler` (skipping happens there).
        **kwargs: the other :class:`~torch.utils.data.DataLoader` arguments; ``batch_size``
            must not be None; ``collate_fn`` defaults to
            :func:`~pourlit.data.windows.collate_windows`.
    """

    def __init__(self, dataset: Dataset, *, sampler: WindowSampler, **kwargs: Any) -> None:
        if not isinstance(sampler, WindowSampler):
            raise TypeError(
                f"ResumableDataLoader needs a WindowSampler, got {type(sampler).__name__}"
            )
        kwargs.setdefault("collate_fn", collate_windows)  # WindowDataset fetches whole batches
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
