"""Replaying stored episodes in the simulator (from their seed and recorded actions)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pourlit.data.rollout import Episode, read_episode
from pourlit.sim.env import EnvConfig, PouringVecEnv


def env_for_episode(ep: Episode) -> PouringVecEnv:
    """A single, non-resetting env built from the config stored in the episode's file."""
    cfg = ep.attrs.get("env_config")
    if not isinstance(cfg, dict) or "seed" not in ep.attrs:
        raise ValueError(
            f"{ep.path}: no env_config/seed attributes (not written by pourlit collect); "
            "it can only be rendered from stored images"
        )
    return PouringVecEnv(EnvConfig.merged(cfg, num_envs=1), autoreset=False)


def replay(ep: Episode, env: PouringVecEnv) -> Iterator[tuple[int, dict]]:
    """Reset ``env`` to the episode's seed and step its recorded actions; yields (t, info)."""
    env.reset_to([int(ep.attrs["seed"])])
    yield 0, {}
    for t, a in enumerate(ep.actions[ep.pad_mask > 0]):
        _, _, term, trunc, info = env.step(torch.as_tensor(a[None], dtype=torch.float64))
        yield t + 1, info
        if bool(term[0]) or bool(trunc[0]):
            break


def render_episode(
    file: str | os.PathLike[str],
    output: str | os.PathLike[str],
    source: str = "auto",
    camera: str = "front",
    size: tuple[int, int] = (240, 320),
    fps: int = 25,
) -> dict:
    """Write a video of a stored episode; returns what was rendered (frames, source, poured)."""
    from pourlit.sim.render import Renderer, check_video_path, write_video

    check_video_path(output)
    ep = read_episode(file, load_images=source in ("auto", "images"))
    if source == "images" and ep.images is None:
        raise ValueError(f"{file}: has no stored images; use --source replay")
    if ep.images is not None and source != "replay":
        write_video(ep.images, output, fps)
        return {"output": str(output), "frames": len(ep.images), "source": "images"}

    env = env_for_episode(ep)
    frames: list[np.ndarray] = []
    info: dict = {}
    try:
        with Renderer(env.model, size[0], size[1], camera) as r:
            for _, info in replay(ep, env):  # noqa: B007 - the last info is read below
                frames.append(r.frame(env.mj_data(0)))
    finally:
        env.close()
    write_video(frames, output, fps)
    poured = float(info["poured_fraction"][0]) if info else 0.0
    result = {"output": str(Path(output)), "frames": len(frames), "source": "replay"}
    result["poured_fraction"] = round(poured, 4)
    if "poured_fraction" in ep.attrs:
        result["recorded_poured_fraction"] = round(float(ep.attrs["poured_fraction"]), 4)
    return result
