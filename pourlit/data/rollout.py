"""The rollout file format (one episode per HDF5 file): writing, reading, naming and listing.

File layout (``rollout_{i:05d}.h5``), a superset of the seed project's layout::

    traj_per_file             scalar int, always 1
    traj0/states              (T, d_s) float32   observation vectors
    traj0/actions             (T, d_a) float32   actions
    traj0/pad_mask            (T,)     float32   1 = real step, 0 = padding
    traj0/rewards             (T,)     float32
    traj0/terminals           (T,)     uint8     1 on the last step if the episode terminated
    traj0/truncated           (T,)     uint8     1 on the last step if it hit the time limit
    traj0/success             scalar   bool
    traj0/images  (optional)  (T, H, W, 3) uint8, gzip, one chunk per frame
    traj0/expert_actions (optional) (T, d_a) float32   the expert's intended actions before
                                                       exploration noise (DART labels)

Root attributes: ``pourlit_version`` (str), ``seed`` (int, env reset seed), ``env_config``
(JSON str), ``obs_names`` / ``action_names`` (JSON lists of str), plus any extra attributes
given to :func:`write_episode`. Lists and dicts are stored as JSON strings; the names of the
JSON-encoded attributes are recorded in the root attribute ``_json_attrs`` so they are decoded
again on read.

Files are written atomically: a hidden temporary file (``.rollout_00003.h5.tmp-<pid>``) is
written, fsynced and then hard-linked to its final name, so a reader never sees a partial file
and an existing file is never overwritten.
"""

from __future__ import annotations

import errno
import importlib.metadata
import io
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

ROLLOUT_GLOB = "rollout_*.h5"
_INDEX_RE = re.compile(r"^rollout_(\d+)\.h5$")
_JSON_ATTRS_KEY = "_json_attrs"
# Attributes that always hold JSON, also in files written without ``_json_attrs``.
_KNOWN_JSON_ATTRS = ("env_config", "obs_names", "action_names", "expert_params")

try:
    _VERSION = importlib.metadata.version("pourlit")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source tree without install
    _VERSION = "0.0.0+unknown"


class RolloutFormatError(ValueError):
    """A rollout file is unreadable or malformed. The message starts with ``"{path}: "``."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class RolloutWriteError(OSError):
    """Writing a rollout file failed (e.g. disk full); no partial file is left behind."""


@dataclass(eq=False)
class Episode:
    """One episode of T steps.

    Attributes:
        states: (T, d_s) float32 observation vectors.
        actions: (T, d_a) float32 actions.
        rewards: (T,) float32 rewards.
        terminals: (T,) bool, True on the last step if the episode terminated.
        truncated: (T,) bool, True on the last step if the episode hit the time limit.
        pad_mask: (T,) float32, 1 for real steps and 0 for padding.
        success: whether the episode achieved the task.
        attrs: file attributes, JSON-valued ones decoded to Python objects.
        images: optional (T, H, W, 3) uint8 RGB frames.
        expert_actions: optional (T, d_a) float32, the expert's intended action at each state
            before exploration noise; ``actions`` holds what was executed (noise included).
            Training on these labels at the noisy states is DART (Laskey et al. 2017).
        path: file the episode was read from, if any.
    """

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    truncated: np.ndarray
    pad_mask: np.ndarray
    success: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)
    images: np.ndarray | None = None
    expert_actions: np.ndarray | None = None
    path: Path | None = None

    @property
    def length(self) -> int:
        """Number of steps T (rows of ``states``, padding included)."""
        return int(self.states.shape[0])


# ----------------------------------------------------------------------------- writing


def _check_finite(name: str, arr: np.ndarray) -> None:
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN/Inf)")


def _prepare_arrays(
    states: Any,
    actions: Any,
    rewards: Any,
    terminals: Any,
    truncated: Any,
    pad_mask: Any,
    images: Any,
    expert_actions: Any = None,
) -> dict[str, np.ndarray]:
    """Convert to on-disk dtypes and validate shapes and values; raises ValueError."""
    s = np.asarray(states, dtype=np.float32)
    a = np.asarray(actions, dtype=np.float32)
    if s.ndim != 2:
        raise ValueError(f"states must be 2-D (T, d_s), got shape {s.shape}")
    if a.ndim != 2:
        raise ValueError(f"actions must be 2-D (T, d_a), got shape {a.shape}")
    t = s.shape[0]
    if t == 0:
        raise ValueError("episode has no steps (T == 0)")
    out = {
        "states": s,
        "actions": a,
        "rewards": np.zeros(t, np.float32) if rewards is None else np.asarray(rewards, np.float32),
        "terminals": np.zeros(t, np.uint8) if terminals is None else np.asarray(terminals) != 0,
        "truncated": np.zeros(t, np.uint8) if truncated is None else np.asarray(truncated) != 0,
        "pad_mask": np.ones(t, np.float32)
        if pad_mask is None
        else np.asarray(pad_mask, np.float32),
    }
    out["terminals"] = out["terminals"].astype(np.uint8)
    out["truncated"] = out["truncated"].astype(np.uint8)
    for name, arr in out.items():
        if arr.shape[0] != t:
            raise ValueError(f"{name} has {arr.shape[0]} steps but states has T={t}")
        if name not in ("states", "actions") and arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D (T,), got shape {arr.shape}")
    for name in ("states", "actions", "rewards", "pad_mask"):
        _check_finite(name, out[name])
    if images is not None:
        img = np.asarray(images)
        if img.dtype != np.uint8 or img.ndim != 4 or img.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (T, H, W, 3), got {img.dtype} {img.shape}")
        if img.shape[0] != t:
            raise ValueError(f"images has {img.shape[0]} steps but states has T={t}")
        out["images"] = img
    if expert_actions is not None:
        e = np.asarray(expert_actions, dtype=np.float32)
        if e.shape != a.shape:
            raise ValueError(
                f"expert_actions must have the shape of actions {a.shape}, got {e.shape}"
            )
        _check_finite("expert_actions", e)
        out["expert_actions"] = e
    return out


def _encode_attrs(attrs: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Return (attrs ready for HDF5, names of JSON-encoded attrs)."""
    encoded: dict[str, Any] = {}
    json_keys: list[str] = []
    for key, value in attrs.items():
        if not isinstance(key, str) or key == _JSON_ATTRS_KEY:
            raise ValueError(f"invalid attribute name {key!r}")
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, str | bool | int | float):
            encoded[key] = value
        else:
            try:
                encoded[key] = json.dumps(value)
            except TypeError as exc:
                raise ValueError(f"attribute {key!r} is not JSON-serialisable: {exc}") from exc
            json_keys.append(key)
    return encoded, json_keys


def _fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # not supported everywhere (e.g. Windows); the file itself was synced
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _publish(tmp: Path, final: Path) -> None:
    """Give ``tmp`` the name ``final`` without ever replacing an existing ``final``."""
    try:
        os.link(tmp, final)  # fails with FileExistsError if final exists (O_EXCL semantics)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        # Filesystem without hard links: check-then-replace (small race window).
        if final.exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(final)) from None
        os.replace(tmp, final)
        return
    tmp.unlink()


def write_episode(
    path: str | os.PathLike[str],
    episode: Episode | None = None,
    *,
    states: Any = None,
    actions: Any = None,
    rewards: Any = None,
    terminals: Any = None,
    truncated: Any = None,
    pad_mask: Any = None,
    success: bool | None = None,
    images: np.ndarray | None = None,
    expert_actions: np.ndarray | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Atomically write one episode to ``path`` and return the path.

    Pass either an :class:`Episode` or the arrays ``states`` (T, d_s) and ``actions`` (T, d_a),
    with optional ``rewards`` (T,) (default 0), ``terminals``/``truncated`` (T,) (default all
    False), ``pad_mask`` (T,) (default all 1) and ``success`` (default False). ``images``
    (T, H, W, 3) uint8, ``expert_actions`` (T, d_a) and ``attrs`` override/extend the
    episode's own. Attribute values may be
    str/int/float/bool or JSON-serialisable lists/dicts.

    Raises:
        ValueError: invalid shapes, dtypes or non-finite values (nothing is written).
        FileExistsError: ``path`` already exists; it is never overwritten.
        RolloutWriteError: writing failed (e.g. disk full); no file or temp file is left.
    """
    final = Path(path)
    arrays_given = any(x is not None for x in (states, actions, rewards, terminals, truncated))
    if episode is not None:
        if arrays_given or pad_mask is not None or success is not None:
            raise ValueError("pass either an Episode or arrays to write_episode, not both")
        states, actions, rewards = episode.states, episode.actions, episode.rewards
        terminals, truncated, pad_mask = episode.terminals, episode.truncated, episode.pad_mask
        success = episode.success
        images = episode.images if images is None else images
        expert_actions = episode.expert_actions if expert_actions is None else expert_actions
        attrs = {**episode.attrs, **(attrs or {})}
    elif states is None or actions is None:
        raise ValueError("write_episode needs an Episode or both states and actions")
    data = _prepare_arrays(
        states, actions, rewards, terminals, truncated, pad_mask, images, expert_actions
    )
    attrs = dict(attrs or {})
    for key, dim in (("obs_names", "states"), ("action_names", "actions")):
        names = attrs.get(key)
        if names is not None and len(names) != data[dim].shape[1]:
            raise ValueError(f"{key} has {len(names)} entries but {dim} has {data[dim].shape[1]}")
    attrs.setdefault("pourlit_version", _VERSION)
    root_attrs, json_keys = _encode_attrs(attrs)

    if final.exists():
        raise FileExistsError(
            errno.EEXIST, "rollout file already exists, not overwriting", str(final)
        )
    # The HDF5 file is built in memory and written with plain file writes: libhdf5 never
    # touches the disk, so a full disk is an ordinary OSError here (libhdf5 itself crashed on
    # ENOSPC, measured 2026-12-02), and the temporary file is removed.
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        image = io.BytesIO()
        with h5py.File(image, "w") as f:
            f.create_dataset("traj_per_file", data=1)
            grp = f.create_group("traj0")
            for name in ("states", "actions", "pad_mask", "rewards", "terminals", "truncated"):
                grp.create_dataset(name, data=data[name])
            grp.create_dataset("success", data=np.bool_(bool(success)))
            if "expert_actions" in data:
                grp.create_dataset("expert_actions", data=data["expert_actions"])
            if "images" in data:
                img = data["images"]
                chunks = (1, *img.shape[1:])
                grp.create_dataset("images", data=img, chunks=chunks, compression="gzip")
            f.attrs.update(root_attrs)
            f.attrs[_JSON_ATTRS_KEY] = json.dumps(json_keys)
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            out.write(image.getbuffer())
            out.flush()
            os.fsync(out.fileno())
        _publish(tmp, final)
        _fsync_path(final.parent, directory=True)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, FileExistsError):
            raise FileExistsError(
                errno.EEXIST, "rollout file already exists, not overwriting", str(final)
            ) from None
        if not isinstance(exc, Exception):
            raise
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise RolloutWriteError(f"{final}: no space left on device") from exc
        reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or (
            type(exc).__name__
        )
        reason = " ".join(reason.split())
        raise RolloutWriteError(f"{final}: could not write rollout ({reason})") from exc
    return final


# ----------------------------------------------------------------------------- reading


def _decode_attrs(path: Path, raw: Mapping[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        attrs[key] = value
    json_keys = set(_KNOWN_JSON_ATTRS)
    if _JSON_ATTRS_KEY in attrs:
        try:
            json_keys.update(json.loads(attrs.pop(_JSON_ATTRS_KEY)))
        except (TypeError, ValueError) as exc:
            raise RolloutFormatError(path, f"attribute {_JSON_ATTRS_KEY!r} is not JSON") from exc
    for key in json_keys & attrs.keys():
        if isinstance(attrs[key], str):
            try:
                attrs[key] = json.loads(attrs[key])
            except ValueError as exc:
                raise RolloutFormatError(path, f"attribute {key!r} is not valid JSON") from exc
    return attrs


def _read(path: Path, f: h5py.File, load_images: bool) -> Episode:
    if "traj_per_file" in f:
        n = int(np.asarray(f["traj_per_file"][()]).reshape(-1)[0])
        if n != 1:
            raise RolloutFormatError(path, f"traj_per_file is {n}, expected 1 episode per file")
    if "traj0" not in f or not isinstance(f["traj0"], h5py.Group):
        raise RolloutFormatError(path, "missing group 'traj0'")
    grp = f["traj0"]
    for name in ("states", "actions", "pad_mask"):
        if name not in grp or not isinstance(grp[name], h5py.Dataset):
            raise RolloutFormatError(path, f"missing dataset 'traj0/{name}'")

    expected_ndim = {"states": 2, "actions": 2, "pad_mask": 1}
    for name in ("rewards", "terminals", "truncated"):
        if name in grp:
            expected_ndim[name] = 1
    dsets = {name: grp[name] for name in expected_ndim}
    for name, ds in dsets.items():
        if ds.ndim != expected_ndim[name]:
            raise RolloutFormatError(
                path, f"traj0/{name} must be {expected_ndim[name]}-D, has shape {ds.shape}"
            )
    t = dsets["states"].shape[0]
    for name, ds in dsets.items():
        if ds.shape[0] != t:
            raise RolloutFormatError(
                path, f"inconsistent length: traj0/{name} has {ds.shape[0]} steps, states has {t}"
            )

    states = np.asarray(dsets["states"][()], dtype=np.float32)
    images: np.ndarray | None = None
    if "images" in grp:
        img = grp["images"]
        if img.ndim == 2 and np.issubdtype(img.dtype, np.floating):
            # Seed project's state-only image mode: the state vector lives in traj0/images
            # (T, d) float32 while traj0/states is all zeros.
            if img.shape[0] != t:
                raise RolloutFormatError(
                    path, f"inconsistent length: traj0/images has {img.shape[0]} steps, states {t}"
                )
            if not np.any(states):
                states = np.asarray(img[()], dtype=np.float32)
        elif img.dtype == np.uint8 and img.ndim == 4 and img.shape[0] == t and img.shape[-1] == 3:
            if load_images:
                images = np.asarray(img[()], dtype=np.uint8)
        else:
            raise RolloutFormatError(
                path, f"traj0/images must be (T={t}, H, W, 3) uint8, has shape {img.shape}"
            )
    actions = np.asarray(dsets["actions"][()], dtype=np.float32)
    checked = [("states", states), ("actions", actions)]
    expert_actions: np.ndarray | None = None
    if "expert_actions" in grp:
        expert_actions = np.asarray(grp["expert_actions"][()], dtype=np.float32)
        if expert_actions.shape != actions.shape:
            raise RolloutFormatError(
                path,
                f"traj0/expert_actions has shape {expert_actions.shape}, "
                f"traj0/actions {actions.shape}",
            )
        checked.append(("expert_actions", expert_actions))
    for name, arr in checked:
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise RolloutFormatError(path, f"traj0/{name} contains {bad} NaN/Inf value(s)")

    def optional(name: str, dtype: type) -> np.ndarray:
        return np.asarray(grp[name][()], dtype=dtype) if name in grp else np.zeros(t, dtype)

    success = bool(np.asarray(grp["success"][()]).reshape(-1)[0]) if "success" in grp else False
    return Episode(
        states=states,
        actions=actions,
        rewards=optional("rewards", np.float32),
        terminals=optional("terminals", bool),
        truncated=optional("truncated", bool),
        pad_mask=np.asarray(dsets["pad_mask"][()], dtype=np.float32),
        success=success,
        attrs=_decode_attrs(path, f.attrs),
        images=images,
        expert_actions=expert_actions,
        path=path,
    )


def read_episode(path: str | os.PathLike[str], *, load_images: bool = False) -> Episode:
    """Read and validate one rollout file.

    Also reads the seed project's files, which hold only ``traj0/{states,actions,pad_mask}``:
    rewards become zeros, terminals/truncated all False, success False and attrs ``{}``. In the
    seed's state-only image mode (``traj0/images`` is float (T, d) and ``traj0/states`` is all
    zeros) the states are taken from ``traj0/images`` and ``Episode.images`` stays None.

    Args:
        path: rollout file.
        load_images: load ``traj0/images`` (T, H, W, 3) uint8 if present; otherwise
            ``Episode.images`` is None.

    Raises:
        RolloutFormatError: the file is unreadable, not HDF5, truncated or malformed; the
            message starts with the path.
    """
    p = Path(path)
    if not p.is_file():
        raise RolloutFormatError(p, "file does not exist" if not p.exists() else "not a file")
    try:
        with h5py.File(p, "r") as f:
            return _read(p, f, load_images)
    except RolloutFormatError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise RolloutFormatError(p, f"cannot read rollout file ({reason})") from exc


# ----------------------------------------------------------------------------- listing


def list_rollouts(root: str | os.PathLike[str]) -> list[Path]:
    """Return the sorted ``rollout_*.h5`` files under ``root``, searched recursively.

    Hidden temporary files (``.rollout_*.h5.tmp-*``) are never listed. A rollout file given as
    ``root`` is returned on its own.

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    r = Path(root)
    if not r.exists():
        raise FileNotFoundError(errno.ENOENT, "rollout directory does not exist", str(r))
    if r.is_file():
        return [r]
    return sorted(p for p in r.rglob(ROLLOUT_GLOB) if p.is_file() and not p.name.startswith("."))


def rollout_path(out_dir: str | os.PathLike[str], index: int) -> Path:
    """Path of rollout number ``index`` in ``out_dir``: ``out_dir/rollout_{index:05d}.h5``."""
    return Path(out_dir) / f"rollout_{index:05d}.h5"


def next_free_index(out_dir: str | os.PathLike[str], rank: int = 0, world_size: int = 1) -> int:
    """First file index for shard ``rank`` of ``world_size`` writers into ``out_dir``.

    Scheme: the smallest ``i`` greater than every existing ``rollout_<i>.h5`` index under
    ``out_dir`` (searched recursively; 0 if none or the folder does not exist) with
    ``i % world_size == rank``. Rank r then uses ``i, i + world_size, ...``, so re-running into
    a folder continues the numbering and concurrent ranks get disjoint names.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    start = 0
    if Path(out_dir).exists():
        for p in list_rollouts(out_dir):
            m = _INDEX_RE.match(p.name)
            if m:
                start = max(start, int(m.group(1)) + 1)
    return start + (rank - start) % world_size
