"""Headless rendering (EGL, falling back to OSMesa) and video files (mp4 via ffmpeg, or gif)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import mujoco
import numpy as np


class Renderer:
    """Offscreen camera images of a scene. Use as a context manager or call :meth:`close`.

    Args:
        model: the compiled scene.
        height, width: image size in pixels (at most the model's offscreen buffer, 480x640).
        camera: a camera name of the scene (``front`` or ``side``).
    """

    def __init__(
        self, model: mujoco.MjModel, height: int = 240, width: int = 320, camera: str = "front"
    ) -> None:
        try:
            self._r = mujoco.Renderer(model, height, width)
        except Exception as e:  # noqa: BLE001 - the GL stack raises many kinds
            raise RuntimeError(
                f"headless rendering failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')} ({e}); "
                "MUJOCO_GL must be set before mujoco is first imported (import pourlit first, "
                "or export MUJOCO_GL=egl; osmesa needs libosmesa6)"
            ) from e
        if camera not in [model.camera(i).name for i in range(model.ncam)]:
            raise ValueError(f"unknown camera {camera!r}")
        self.camera = camera

    def frame(self, data: mujoco.MjData) -> np.ndarray:
        """An RGB image (H, W, 3) uint8 of ``data`` (kinematics must be up to date)."""
        self._r.update_scene(data, self.camera)
        return self._r.render().copy()

    def close(self) -> None:
        self._r.close()

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_video_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path if it ends in .mp4 or .gif, else ``ValueError`` (check before work)."""
    p = Path(path)
    if p.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"{p}: video must end in .mp4 or .gif")
    return p


def write_video(frames: Iterable[np.ndarray], path: str | os.PathLike[str], fps: int = 25) -> Path:
    """Write RGB frames to ``path`` (``.mp4`` via ffmpeg or ``.gif``); returns the path."""
    import imageio.v2 as imageio

    path = check_video_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    kwargs = {"fps": fps}
    if suffix == ".mp4":
        kwargs.update(codec="libx264", quality=7, macro_block_size=8)
    else:
        kwargs = {"duration": 1000 / fps, "loop": 0}
    n = 0
    with imageio.get_writer(path, **kwargs) as w:
        for f in frames:
            w.append_data(f)
            n += 1
    if n == 0:
        path.unlink(missing_ok=True)
        raise ValueError(f"{path}: no frames to write")
    return path
