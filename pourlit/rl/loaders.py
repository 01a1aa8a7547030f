"""The SAC module's data loaders. They carry no data: the rollout callback collects and the
module samples its replay buffer; a loader only paces Lightning's loop.

- training: endless, one item = one training batch = at most one update, so an epoch never
  ends by itself (``trainer.limit_train_batches`` makes epochs, ``max_steps`` or the module's
  ``max_env_steps`` ends the run);
- validation: one item, so each validation is one ``validation_step`` (which runs whole
  episodes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset


class _Forever(IterableDataset):
    """Yields 0, 1, 2, ... forever."""

    def __iter__(self) -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1


class _Once(IterableDataset):
    """Yields 0 once."""

    def __iter__(self) -> Iterator[int]:
        yield 0


class _UpdateLoader(DataLoader):
    """Its resume state is empty (its items carry nothing); being stateful tells Lightning
    that resuming mid-"epoch" is fine."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def update_loader() -> DataLoader:
    """The endless training loader. Its own generator: a DataLoader iterator draws a base seed
    from the global torch RNG when created (``generator`` None), which would shift a resumed
    run's skill sampling by one draw."""
    return _UpdateLoader(_Forever(), batch_size=None, generator=torch.Generator())


def validation_loader() -> DataLoader:
    """One item per validation."""
    return DataLoader(_Once(), batch_size=None)
