"""One array library per device for the per-step arithmetic: numpy on the CPU, torch elsewhere.

The task code (``pourlit.sim.task``) and the env's per-step bookkeeping are written once, against
names and arguments that numpy (2.x) and torch both accept: ``xp.concat``, ``xp.stack``,
``xp.where``, ``xp.tanh``, ``xp.arccos``, ``xp.hypot``, ``xp.sqrt``, ``xp.abs``, ``xp.amax``,
``xp.isfinite``, the methods ``clip``, ``sum``, ``any``, ``all``, ``reshape`` (reductions with
``axis=`` / ``keepdims=``), operators, ``@`` and indexing with an index array of the same
library; ``astype`` and ``copy`` below cover what they spell differently. ``xp`` is the module
of the arrays at hand (``namespace``). (Avoided on purpose: numpy's ``linalg.vector_norm``,
``nan_to_num``, ``mean`` and ``clip`` functions are Python-level wrappers costing several
microseconds a call.)

Why numpy on the CPU: the task's arrays hold a few dozen numbers per environment, so its cost
is the per-operation overhead, which is several times lower in numpy than in torch. Torch tensors
on the CPU and numpy arrays share memory (``view`` and ``to_torch`` copy nothing), so the env still
hands out torch tensors. On an accelerator (MuJoCo Warp on CUDA) everything stays on the
device as torch tensors.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import torch

Array = Any  # numpy.ndarray or torch.Tensor


def for_device(device: torch.device | str) -> ModuleType:
    """The array library of the per-step arithmetic on ``device``: numpy on the CPU."""
    return np if torch.device(device).type == "cpu" else torch


def namespace(x: Array) -> ModuleType:
    """numpy for a numpy array, torch for a tensor."""
    return np if isinstance(x, np.ndarray) else torch


def view(t: torch.Tensor, xp: ModuleType) -> Array:
    """Tensor ``t`` as an array of library ``xp``: for numpy, a numpy array sharing the (CPU)
    tensor's memory; for torch, ``t`` itself."""
    return t.numpy() if xp is np else t


def to_torch(x: Array) -> torch.Tensor:
    """A numpy array as a tensor sharing its memory; a tensor as it is."""
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


def asarray(x: Any, xp: ModuleType, dtype: Any = None, device: torch.device | None = None) -> Array:
    """A new array of library ``xp`` (on ``device`` for torch) holding ``x`` (a tensor, array,
    list or number), never sharing memory with ``x``."""
    if xp is np:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        return np.array(x, dtype=dtype)
    return torch.as_tensor(x, dtype=dtype, device=device).clone()


def astype(x: Array, dtype: Any) -> Array:
    """``x`` as ``dtype`` (``xp.float32`` etc.); ``x`` itself when it already is."""
    return x.astype(dtype, copy=False) if isinstance(x, np.ndarray) else x.to(dtype)


def copy(x: Array) -> Array:
    return x.copy() if isinstance(x, np.ndarray) else x.clone()


_CONSTANTS: dict[tuple, Array] = {}


def const(values: tuple, like: Array) -> Array:
    """``values`` as an array of ``like``'s library, dtype and device, made once and cached (an
    array built per call would cost as much as the arithmetic it feeds)."""
    if isinstance(like, np.ndarray):
        key: tuple = (values, like.dtype, None)
    else:
        key = (values, like.dtype, like.device)
    c = _CONSTANTS.get(key)
    if c is None:
        if isinstance(like, np.ndarray):
            c = np.array(values, dtype=like.dtype)
        else:
            c = torch.tensor(values, dtype=like.dtype, device=like.device)
        _CONSTANTS[key] = c
    return c
