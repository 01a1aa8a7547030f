"""pourlit: learning a robot pouring skill from demonstrations with skill-prior RL (SPiRL)."""

import atexit
import ctypes.util
import os
import sys
from importlib.metadata import PackageNotFoundError, version


def _headless_gl() -> str:
    """EGL where libEGL is installed, else OSMesa where libOSMesa is, else EGL (whose error
    message then says what to install)."""
    if ctypes.util.find_library("EGL"):
        return "egl"
    if ctypes.util.find_library("OSMesa"):
        return "osmesa"
    return "egl"


# MuJoCo picks its OpenGL platform when first imported: render headless unless told otherwise.
if "MUJOCO_GL" not in os.environ:
    os.environ["MUJOCO_GL"] = _headless_gl()

try:
    __version__ = version("pourlit")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"


GYM_ENV_ID = "pourlit/Pouring-v0"


def _register_gymnasium() -> None:
    """``gymnasium.make("pourlit/Pouring-v0", cfg=EnvConfig(...))`` works after ``import pourlit``.
    The entry point is a string: nothing of the simulator is imported until the env is made."""
    try:
        import gymnasium
    except ImportError:  # gymnasium is a dependency; a broken install still imports pourlit
        return
    if GYM_ENV_ID not in gymnasium.registry:
        gymnasium.register(id=GYM_ENV_ID, entry_point="pourlit.sim.gym_env:PouringGymEnv")


_register_gymnasium()


def _destroy_process_group() -> None:
    """Tear down torch.distributed while the interpreter is still whole. A gloo process group
    left to interpreter finalization can abort the process ("terminate called without an active
    exception", pytorch/pytorch#190489) after a DDP run has finished; Lightning destroys only
    NCCL groups at exit. Looks torch up in ``sys.modules``: importing pourlit imports no torch."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


atexit.register(_destroy_process_group)
