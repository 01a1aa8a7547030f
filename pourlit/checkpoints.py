"""What pourlit's checkpoint files are, and their small inference copies.

Every checkpoint pourlit writes records its kind under ``pourlit_kind``: ``rl`` (``SACModule``),
``skill`` (``SkillPriorModule``) or ``action_prior`` (``ActionPriorModule``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from pourlit.files import write_atomic

KINDS = ("rl", "skill", "action_prior")


def checkpoint_kind(ckpt: str | Path) -> str:
    """``rl`` for a SAC checkpoint, ``skill`` for a skill-prior one, ``action_prior`` for a flat
    action-prior / BC one: the ``pourlit_kind`` the checkpoint records, or, for checkpoints
    from before 2026-12-02 (the shipped skill and action priors), what their hyperparameter
    names say."""
    p = Path(ckpt)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: checkpoint not found")
    try:
        ckpt_dict = torch.load(p, map_location="cpu", weights_only=False)
        hp = ckpt_dict.get("hyper_parameters", {})
    except Exception as e:  # noqa: BLE001 - torch/pickle raise many kinds for a bad file
        raise ValueError(f"{p}: not a pourlit checkpoint ({type(e).__name__})") from e
    if ckpt_dict.get("pourlit_kind") in KINDS:
        return ckpt_dict["pourlit_kind"]
    if "skill_ckpt" in hp:
        return "rl"
    if "variant" in hp:
        return "skill"
    if "blocks" in hp:
        return "action_prior"
    raise ValueError(f"{p}: not a pourlit checkpoint (unknown hyperparameters {sorted(hp)[:6]})")


def export_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Write a small inference copy of a Lightning checkpoint of any kind (``pourlit export``):
    weights, buffers, hyperparameters and kind only (no optimiser, loop or callback state, so
    not for resuming); an RL checkpoint keeps its counters (env steps, episodes, updates)."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: checkpoint not found")
    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - torch/pickle raise many kinds for a bad file
        raise ValueError(f"{src}: not a pourlit checkpoint ({type(e).__name__})") from e
    if not isinstance(ckpt, dict):
        raise ValueError(f"{src}: not a Lightning checkpoint")
    keep = ("state_dict", "hyper_parameters", "pytorch-lightning_version", "epoch", "global_step")
    missing = [k for k in ("state_dict", "hyper_parameters") if k not in ckpt]
    if missing:
        raise ValueError(f"{src}: not a Lightning checkpoint with hyperparameters ({missing})")
    keep += ("pourlit_kind",)
    small = {k: ckpt[k] for k in keep if k in ckpt}
    if "pourlit_rl" in ckpt:  # an RL checkpoint: its counters say how far it trained
        small["pourlit_rl"] = {
            k: ckpt["pourlit_rl"][k] for k in ("env_steps", "episodes", "updates")
        }
    save_atomic(small, dst)
    return dst


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` that never leaves a partial file: ``obj`` is serialised in memory, written
    to a hidden temporary file beside ``path``, fsynced and renamed over it (torch's own file
    writer turns a full disk into a RuntimeError and leaves the partial file). A failed write
    removes the temporary file, keeps any previous file at ``path`` intact and raises an
    OSError naming ``path``."""
    final = Path(path)
    buf = io.BytesIO()
    torch.save(obj, buf)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(final)) from e
    write_atomic(final, buf.getbuffer())
