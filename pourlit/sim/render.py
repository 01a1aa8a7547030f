"""Headless rendering (EGL, falling back to OSMesa) and video files (mp4 via ffmpeg, or gif)."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import mujoco
import numpy as np

from pourlit.files import write_atomic


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
    """Write RGB frames to ``path`` (``.mp4`` via ffmpeg or ``.gif``); returns the path.

    The video is written to a hidden temporary file beside ``path`` and renamed over it, so a
    failed write (a full disk) leaves no partial video: the temporary file is removed and an
    OSError names ``path``. ffmpeg ignores its own write errors, so an mp4 is read back (its
    frames counted) before the rename."""
    import imageio.v2 as imageio

    path = check_video_path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".gif":  # encoded in memory, written with plain writes
            stack = list(frames)
            if not stack:
                raise ValueError(f"{path}: no frames to write")
            write_atomic(
                path, imageio.mimwrite("<bytes>", stack, format="GIF", duration=1000 / fps, loop=0)
            )
            return path
        else:
            n = 0
            kwargs = {"fps": fps, "codec": "libx264", "quality": 7, "macro_block_size": 8}
            with imageio.get_writer(tmp, ffmpeg_log_level="quiet", **kwargs) as w:
                for f in frames:
                    w.append_data(f)
                    n += 1
            if n == 0:
                raise ValueError(f"{path}: no frames to write")
            if _mp4_frames(tmp) != n:
                full = shutil.disk_usage(tmp.parent).free < 1 << 20
                raise OSError(
                    errno.ENOSPC if full else errno.EIO,
                    os.strerror(errno.ENOSPC) if full else "ffmpeg wrote no valid video",
                    str(path),
                )
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _mp4_frames(path: Path) -> int:
    """Frames ffmpeg reads back from ``path`` (0 if it cannot read the file)."""
    import imageio_ffmpeg

    try:
        return imageio_ffmpeg.count_frames_and_secs(str(path))[0]
    except (RuntimeError, OSError, ValueError):
        return 0
