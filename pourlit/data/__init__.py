"""Rollout datasets: one-episode HDF5 files (``rollout.py``: the format, reading, writing,
naming), their summaries (``summary.py``) and the LightningDataModule that serves
skill-learning windows from them (``datamodule.py``, ``windows.py``, ``loader.py``).

``RolloutDataModule`` and ``SkippedRolloutWarning`` are imported lazily on first access, so
that reading and writing rollouts does not pay for importing torch and lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pourlit.data.rollout import (
    Episode,
    RolloutFormatError,
    RolloutWriteError,
    list_rollouts,
    next_free_index,
    read_episode,
    rollout_path,
    write_episode,
)
from pourlit.data.summary import format_summary, summarize

__all__ = [
    "Episode",
    "RolloutDataModule",
    "RolloutFormatError",
    "RolloutWriteError",
    "SkippedRolloutWarning",
    "format_summary",
    "list_rollouts",
    "next_free_index",
    "read_episode",
    "rollout_path",
    "summarize",
    "write_episode",
]

_LAZY = {"RolloutDataModule", "SkippedRolloutWarning"}

if TYPE_CHECKING:
    from pourlit.data.datamodule import RolloutDataModule, SkippedRolloutWarning


def __getattr__(name: str) -> Any:
    """Import the datamodule names on first use (module-level ``__getattr__``, PEP 562)."""
    if name in _LAZY:
        from pourlit.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
