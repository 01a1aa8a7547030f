"""``pourlit inspect``'s report on a set of rollout files: counts, sizes, success rate, action
ranges and the malformed files."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pourlit.data.rollout import RolloutFormatError, list_rollouts, read_episode


@dataclass
class DatasetSummary:
    """Statistics over a set of rollout files.

    ``steps`` counts all T rows (padding included); ``action_min``/``action_max`` are (d_a,)
    over real steps (pad_mask > 0). Dimension fields and ranges are None without valid files.
    """

    files: int = 0
    episodes: int = 0
    steps: int = 0
    state_dim: int | None = None
    action_dim: int | None = None
    success_rate: float | None = None
    action_min: np.ndarray | None = None
    action_max: np.ndarray | None = None
    bad_files: list[tuple[Path, str]] = field(default_factory=list)
    action_names: list[str] | None = None


def summarize(
    paths_or_root: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> DatasetSummary:
    """Summarise rollout files (a directory, one file, or an iterable of files).

    Malformed files, and files whose state/action dimensions differ from the first valid file,
    are collected in ``bad_files`` with the reason instead of raising.
    """
    if isinstance(paths_or_root, str | os.PathLike):
        paths = list_rollouts(paths_or_root)
    else:
        paths = [Path(p) for p in paths_or_root]
    s = DatasetSummary(files=len(paths))
    successes = 0
    for p in paths:
        try:
            ep = read_episode(p)
        except RolloutFormatError as exc:
            s.bad_files.append((p, str(exc)))
            continue
        d_s, d_a = ep.states.shape[1], ep.actions.shape[1]
        if s.state_dim is None:
            s.state_dim, s.action_dim = d_s, d_a
            names = ep.attrs.get("action_names")
            if isinstance(names, list) and len(names) == d_a:
                s.action_names = [str(n) for n in names]
        elif (d_s, d_a) != (s.state_dim, s.action_dim):
            s.bad_files.append(
                (
                    p,
                    f"{p}: dims (state {d_s}, action {d_a}) differ from "
                    f"(state {s.state_dim}, action {s.action_dim})",
                )
            )
            continue
        s.episodes += 1
        s.steps += ep.length
        successes += int(ep.success)
        real = ep.actions[ep.pad_mask > 0]
        if len(real):
            lo, hi = real.min(axis=0), real.max(axis=0)
            s.action_min = lo if s.action_min is None else np.minimum(s.action_min, lo)
            s.action_max = hi if s.action_max is None else np.maximum(s.action_max, hi)
    if s.episodes:
        s.success_rate = successes / s.episodes
    return s


def format_summary(summary: DatasetSummary) -> str:
    """Render a :class:`DatasetSummary` as a plain-text report."""
    s = summary

    def fmt(v: object) -> str:
        return "-" if v is None else str(v)

    mean_len = f"{s.steps / s.episodes:.1f}" if s.episodes else "-"
    rate = "-"
    if s.success_rate is not None:
        rate = f"{100 * s.success_rate:.1f}% ({round(s.success_rate * s.episodes)}/{s.episodes})"
    rows = [
        ("files", s.files),
        ("episodes", s.episodes),
        ("steps", s.steps),
        ("mean length", mean_len),
        ("state dim", fmt(s.state_dim)),
        ("action dim", fmt(s.action_dim)),
        ("success rate", rate),
    ]
    lines = ["Rollout dataset summary"] + [f"  {k:<14}{v}" for k, v in rows]
    if s.action_min is not None and s.action_max is not None:
        names = s.action_names or [""] * len(s.action_min)
        width = max([4, *(len(n) for n in names)])
        lines += ["", "Action ranges", f"  {'dim':>3}  {'name':<{width}}  {'min':>11}  {'max':>11}"]
        for i, (n, lo, hi) in enumerate(zip(names, s.action_min, s.action_max, strict=True)):
            lines.append(f"  {i:>3}  {n:<{width}}  {lo:>11.4g}  {hi:>11.4g}")
    lines += ["", f"Malformed files ({len(s.bad_files)})"]
    if s.bad_files:
        for p, reason in s.bad_files:
            reason = reason.removeprefix(f"{p}: ")
            lines.append(f"  {p}\n      {reason}")
    else:
        lines.append("  none")
    return "\n".join(lines)
