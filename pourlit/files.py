"""Writing a file so that a reader never sees it half written."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, data: bytes | memoryview | str) -> None:
    """Write ``data`` (text is written as is) to ``path`` through a hidden temporary file
    beside it (``.NAME.tmp-<pid>``), fsynced and renamed over it. A failed write (a full disk)
    removes the temporary file, keeps any previous file at ``path`` intact and raises an
    OSError naming ``path``."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w" if isinstance(data, str) else "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(p)) from e
