"""A rollout folder that several collectors share: collector slots and the folder's summary.json.

Any number of ``pourlit collect`` processes may write into one folder at once, with or without
``--rank``. Each takes a *slot* (the lowest one no running collector of its rank holds), and a
slot above 0 is mixed into its episode seeds, so concurrent collectors of one rank record
different episodes, while collectors of different ranks keep the seeds of (seed, rank) alone,
whichever of them starts first; file names are claimed
atomically when a file is published (``write_episode`` never replaces a file), and a collector
whose name was taken moves on to the next free one.

``summary.json`` describes the whole folder, not the latest run: a record per rollout file
(success, poured and spilled fractions, length, seed) and one per collect run (its counters,
updated with every file it writes). Every update first reconciles the records with the files on
disk, so files of a killed run, of an older pourlit or copied in by hand are covered at the next
update (the next collect run, or ``pourlit inspect``). Updates hold a lock, so concurrent
collectors never lose each other's records.

The locks are POSIX record locks on one lock file per folder in the system's temp directory
(named by a hash of the folder's real path), so the data folder holds only rollout files and
the summary. They serialise collectors on one machine; collectors on several machines writing
into one shared folder use ``--rank``/``--world-size``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pourlit.data.rollout import (
    RolloutFormatError,
    RolloutWriteError,
    list_rollouts,
    read_episode,
)

SUMMARY_NAME = "summary.json"


RANK_STRIDE = 1 << 16  # lock bytes per slot level: ranks below 65536 never share a byte


class FolderLock:
    """Locks of one rollout folder: byte 0 of the lock file guards ``summary.json``, byte
    ``1 + rank + k * RANK_STRIDE`` is slot ``k`` of collectors of ``rank`` (held until
    :meth:`close` or the process ends)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        key = hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:16]
        self.path = Path(tempfile.gettempdir()) / f"pourlit-collect-{key}.lock"
        try:
            self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # e.g. another user's lock file: run unlocked, as slot 0
            self.fd = None
        self._threads = threading.Lock()  # record locks do not exclude a process's own threads

    def claim_slot(self, rank: int = 0) -> int:
        """The lowest slot no other live collector of the same ``rank`` holds; it stays held
        until :meth:`close`. Collectors of different ranks each get slot 0 whichever starts
        first, so their seeds (which mix in a slot above 0) do not depend on a start race."""
        if self.fd is None:
            return 0
        if not 0 <= rank < RANK_STRIDE:
            raise ValueError(f"rank must be in [0, {RANK_STRIDE}), got {rank}")
        for k in itertools.count():
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 1 + rank + k * RANK_STRIDE)
                return k
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def summary(self) -> Iterator[None]:
        """Hold the summary lock (blocking) for one read-modify-write of ``summary.json``."""
        with self._threads:
            if self.fd is None:
                yield
                return
            fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, 0)
            try:
                yield
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, 0)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases every lock this process holds on the file
            self.fd = None


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete hidden temporary files (``.NAME.tmp-<pid>``) whose writer process is gone (a
    collector killed mid-write); returns them. Files of live writers are left alone."""
    removed = []
    for p in Path(folder).glob(".*.tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or another user's): not ours to delete
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def file_record(path: Path) -> dict[str, Any]:
    """The summary's record of one rollout file (None values where the file lacks them)."""
    ep = read_episode(path)
    return {
        "success": bool(ep.success),
        "steps": int(ep.length),
        "poured_fraction": ep.attrs.get("poured_fraction"),
        "spilled_fraction": ep.attrs.get("spilled_fraction"),
        "seed": ep.attrs.get("seed"),
    }


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("rollouts"), dict):
        return {}  # a summary of an older pourlit (one run): rebuilt from the files
    return data


def _totals(rollouts: dict[str, dict], runs: list[dict]) -> dict[str, Any]:
    """Folder totals: files from the file records, episode rates from the runs' counters
    (runs also count the failed episodes they did not write)."""
    ok = [r for r in rollouts.values() if "error" not in r]
    attempted = sum(int(r["attempted"]) for r in runs)
    return {
        "files": len(rollouts),
        "malformed_files": len(rollouts) - len(ok),
        "file_success_rate": sum(r["success"] for r in ok) / len(ok) if ok else None,
        "episodes_attempted": attempted,
        "episodes_written": sum(int(r["written"]) for r in runs),
        "success_rate": sum(int(r["success"]) for r in runs) / attempted if attempted else 0.0,
        "mean_poured_fraction": sum(r["poured_sum"] for r in runs) / attempted
        if attempted
        else 0.0,
        "mean_spilled_fraction": (
            sum(r["spilled_sum"] for r in runs) / attempted if attempted else 0.0
        ),
        "env_steps": sum(int(r["env_steps"]) for r in runs),
        "wall_seconds": round(sum(float(r["wall_seconds"]) for r in runs), 2),
    }


def update_summary(
    folder: str | os.PathLike[str],
    lock: FolderLock | None = None,
    records: dict[str, dict] | None = None,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Rewrite ``folder/summary.json`` (atomically, under the lock): reconcile its file records
    with the rollout files on disk, merge ``records`` (file name -> record) and ``run`` (replaces
    the run with the same ``id``), recompute the totals. Returns the summary written."""
    folder = Path(folder)
    own = lock is None
    lock = FolderLock(folder) if lock is None else lock
    try:
        with lock.summary():
            path = folder / SUMMARY_NAME
            old = _read_summary(path)
            on_disk = {str(p.relative_to(folder)): p for p in list_rollouts(folder)}
            rollouts = {k: v for k, v in old.get("rollouts", {}).items() if k in on_disk}
            rollouts.update({k: v for k, v in (records or {}).items() if k in on_disk})
            for name, p in on_disk.items():
                if name not in rollouts:
                    try:
                        rollouts[name] = file_record(p)
                    except RolloutFormatError as e:
                        rollouts[name] = {"error": str(e)}
            runs = [r for r in old.get("runs", []) if run is None or r.get("id") != run["id"]]
            if run is not None:
                runs.append(run)
            summary = {
                **_totals(rollouts, runs),
                "runs": runs,
                "rollouts": dict(sorted(rollouts.items())),
            }
            write_json_atomic(path, summary)
    finally:
        if own:
            lock.close()
    return summary


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write JSON to a hidden temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise RolloutWriteError(f"{path}: no space left on device") from e
        raise RolloutWriteError(f"{path}: could not write summary ({e.strerror or e})") from e
