"""What an RL checkpoint holds beyond Lightning's own keys (networks, optimisers, loops):
under ``pourlit_rl`` the replay buffer, the counters (env steps, episodes, updates, update
credit), the replay sampling generator, the torch RNG state and the training env's full
state (physics, observations, episode clocks); under ``pourlit_kind`` the kind ``rl``
(``pourlit.checkpoints.checkpoint_kind``). The rollout callback saves its running skills in
its own callback state. Together they make ``--ckpt_path last`` continue exactly where the
run stopped; an exported (inference) checkpoint keeps only the counters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from pourlit.rl.module import SACModule

KEY = "pourlit_rl"


def save_training_state(m: SACModule, checkpoint: dict[str, Any]) -> None:
    """Add the kind and ``KEY`` to a checkpoint Lightning is writing."""
    checkpoint["pourlit_kind"] = "rl"
    checkpoint[KEY] = {
        "replay": m.replay.state_dict(),
        "env_steps": m.env_steps,
        "episodes": m.episodes,
        "updates": m.updates,
        "update_credit": m.update_credit,
        "replay_generator": m._gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "env": env_state(m),
    }


def env_state(m: SACModule) -> dict[str, Any] | None:
    """The training env's state: live, or as ``close_envs`` kept it (None before any training)."""
    if m.env is not None and m.env._obs is not None:
        return m.env.state_dict()
    return m._env_snapshot


def load_training_state(m: SACModule, checkpoint: dict[str, Any]) -> None:
    """Restore what ``save_training_state`` added (nothing for a checkpoint without it). In
    ``fit`` the env already exists (built in ``setup``, which Lightning runs before restoring),
    so it continues mid-episode."""
    state = checkpoint.get(KEY)
    if state is None:
        return
    m.env_steps, m.episodes = int(state["env_steps"]), int(state["episodes"])
    m.updates = int(state["updates"])
    if "replay" not in state:  # an exported (inference) copy keeps only the counters
        return
    m.replay.load_state_dict(state["replay"])
    m.update_credit = float(state["update_credit"])
    m._gen.set_state(state["replay_generator"])
    torch.set_rng_state(state["torch_rng"])
    if m.env is not None and state.get("env") is not None:
        m.env.load_state_dict(state["env"])
        m.env_restored = True


def close_envs(m: SACModule) -> None:
    """Close the envs, keeping the training env's state for a checkpoint saved after ``fit``
    returns (``trainer.save_checkpoint``), so that one resumes exactly too."""
    if m.env is not None and m.env._obs is not None:
        m._env_snapshot = m.env.state_dict()
    for name in ("env", "_eval_env"):
        env = getattr(m, name)
        if env is not None:
            env.close()
            setattr(m, name, None)
