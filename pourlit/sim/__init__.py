"""Simulation: the MuJoCo pouring scene, the task, physics backends and env views."""

from pourlit.sim.env import EnvConfig, PouringVecEnv

__all__ = ["EnvConfig", "PouringVecEnv"]
