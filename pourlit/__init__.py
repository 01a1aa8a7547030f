"""pourlit: learning a robot pouring skill from demonstrations with skill-prior RL (SPiRL)."""

import os
from importlib.metadata import PackageNotFoundError, version

# MuJoCo picks its OpenGL platform when first imported: render headless unless told otherwise.
os.environ.setdefault("MUJOCO_GL", "egl")

try:
    __version__ = version("pourlit")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"
