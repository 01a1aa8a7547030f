"""pourlit: learning a robot pouring skill from demonstrations with skill-prior RL (SPiRL)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pourlit")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"
