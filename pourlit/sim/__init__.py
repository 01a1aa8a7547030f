"""Simulation: the MuJoCo pouring scene, the task, physics backends and env views."""

from pourlit.sim.env import EnvConfig, PouringVecEnv, RandomisationConfig
from pourlit.sim.scene import LiquidConfig

__all__ = ["EnvConfig", "LiquidConfig", "PouringVecEnv", "RandomisationConfig"]
