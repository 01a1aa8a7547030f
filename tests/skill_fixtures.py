"""Helpers for tests/test_skill_training.py: tiny synthetic rollout datasets and configs.

The datasets have the pouring env's sizes (50-D states, 7-D actions) so that a skill checkpoint
trained on them can be evaluated in the simulator; their ``env_config`` attribute shortens the
episodes to ``MAX_EPISODE_STEPS`` steps.
"""

from __future__ import annotations

import copy
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from pourlit.data.rollout import write_episode
from pourlit.skills.module import SkillPriorModule

STATE_DIM, ACTION_DIM = 50, 7
HORIZON, BATCH, WINDOWS, VAL_WINDOWS = 5, 16, 64, 32
LATENT, HIDDEN = 4, 32
MAX_EPISODE_STEPS = 30
STEPS_PER_EPOCH = WINDOWS // BATCH  # 4, single process


def env_config_dict() -> dict:
    from pourlit.sim.env import EnvConfig

    return EnvConfig(max_episode_steps=MAX_EPISODE_STEPS).to_dict()


def random_walk(rng: np.random.Generator, t: int, d: int, step: float = 0.08) -> np.ndarray:
    """A smooth (T, d) random walk that stays in [-1, 1]."""
    x = np.empty((t, d), np.float32)
    x[0] = rng.uniform(-0.5, 0.5, d)
    for i in range(1, t):
        x[i] = np.clip(x[i - 1] + step * rng.standard_normal(d), -1.0, 1.0)
    return x


def write_dataset(
    root: Path,
    episodes: int = 8,
    state_dim: int = STATE_DIM,
    action_dim: int = ACTION_DIM,
    seed: int = 0,
    with_env: bool = True,
) -> Path:
    """Write ``episodes`` rollout files (lengths 30..60) of smooth random walks under ``root``."""
    rng = np.random.default_rng(seed)
    env_cfg = env_config_dict() if with_env else None
    # demonstrations of one task: a shared smooth template plus a small per-episode deviation
    template_s = random_walk(rng, 60, state_dim)
    template_a = random_walk(rng, 60, action_dim)
    for ep in range(episodes):
        t = int(rng.integers(30, 61))
        attrs: dict[str, Any] = {"seed": 1000 + ep}
        if with_env:
            attrs["env_config"] = env_cfg
            attrs["obs_names"] = [f"obs{i}" for i in range(state_dim)]
            attrs["action_names"] = [f"act{i}" for i in range(action_dim)]
        states = template_s[:t] + 0.1 * random_walk(rng, t, state_dim, step=0.05)
        actions = template_a[:t] + 0.1 * random_walk(rng, t, action_dim, step=0.05)
        write_episode(
            root / f"rollout_{ep:05d}.h5",
            states=np.clip(states, -1.0, 1.0),
            actions=np.clip(actions, -1.0, 1.0),
            success=bool(ep % 2),
            attrs=attrs,
        )
    return root


def model_kwargs(**overrides: Any) -> dict:
    kw = dict(
        horizon=HORIZON,
        latent_dim=LATENT,
        hidden=HIDDEN,
        prior_blocks=1,
        decoder_blocks=1,
        clip_grad_steps=0,
    )
    kw.update(overrides)
    return kw


def data_kwargs(**overrides: Any) -> dict:
    kw = dict(
        horizon=HORIZON,
        batch_size=BATCH,
        windows_per_epoch=WINDOWS,
        val_windows=VAL_WINDOWS,
        val_fraction=0.25,
        normalize_states=True,
    )
    kw.update(overrides)
    return kw


def cli_config(
    data_dir: Path,
    run_dir: Path,
    model: dict | None = None,
    data: dict | None = None,
    trainer: dict | None = None,
    repo_config: Path | None = None,
) -> dict:
    """The repository's configs/skills/spirl_cl.yaml with small sizes and paths under
    ``run_dir`` (CSVLogger in ``run_dir/logs``, checkpoints in ``run_dir/checkpoints``)."""
    if repo_config is None:
        repo_config = Path(__file__).resolve().parents[1] / "configs/skills/spirl_cl.yaml"
    cfg = copy.deepcopy(yaml.safe_load(repo_config.read_text()))
    t = cfg["trainer"]
    t.update(
        max_epochs=1,
        log_every_n_steps=1,
        default_root_dir=str(run_dir),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    t["logger"][0]["init_args"]["save_dir"] = str(run_dir)
    for cb in t["callbacks"]:
        cb["init_args"]["dirpath"] = str(run_dir / "checkpoints")
    t.update(trainer or {})
    m = cfg["model"]["init_args"]
    m.update({k: v for k, v in model_kwargs().items() if k != "horizon"})
    m.update(model or {})
    d = cfg["data"]["init_args"]
    d.update(data_kwargs(), data_dir=str(data_dir))
    d.update(data or {})
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def step_checkpoint_config(cfg: dict, every_n_train_steps: int, kill: int | None = None) -> dict:
    """``cfg`` (of :func:`cli_config`) with its step-checkpoint callback saving every
    ``every_n_train_steps`` steps and, with ``kill``, a :class:`KillAtStep` at that step."""
    callbacks = cfg["trainer"]["callbacks"]
    (step_cb,) = [cb for cb in callbacks if "every_n_train_steps" in cb["init_args"]]
    step_cb["init_args"]["every_n_train_steps"] = every_n_train_steps
    if kill is not None:
        callbacks.append({"class_path": "skill_fixtures.KillAtStep", "init_args": {"step": kill}})
    return cfg


class WorseningValModule(SkillPriorModule):
    """A SkillPriorModule whose val/recon_mse gets worse every epoch (about ``epoch + 1`` is
    mixed into the metric), so that a monitored ModelCheckpoint sees an improvement only at
    epoch 0. Used as a ``class_path`` in CLI configs (this module is importable in tests)."""

    def on_validation_epoch_end(self) -> None:
        self.val_mse.update(torch.tensor(float(self.current_epoch + 1)), weight=1e6)
        super().on_validation_epoch_end()


class KilledForTest(Exception):
    """Raised by :class:`KillAtStep` to stop a run the way a crash or kill would."""


class KillAtStep(Callback):
    """Stops training with :class:`KilledForTest` right after the optimizer step that makes
    ``trainer.global_step == step``, before any ModelCheckpoint can save that step (Lightning
    runs checkpoint callbacks' hooks after all others), like a kill at that moment. Usable as a
    ``class_path`` in CLI configs."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KilledForTest(f"killed at global step {self.step}")


class SigkillAtStep(Callback):
    """SIGKILLs its own process right after the optimizer step that makes ``global_step ==
    step`` (no exception, no cleanup: what ``kill -9`` does). A ``class_path`` for CLI configs."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
