"""One line for an error: what failed and where (``pourlit: error: <what>``), and its exit code.

Every pourlit command reports an error in what the user gave (a missing or malformed file, an
unknown or invalid option, an unwritable output path) as one line and exit status 2; a failure
while running (a full disk, a write that failed) as one line and exit status 1. ``POURLIT_DEBUG=1``
shows the traceback instead.
"""

from __future__ import annotations

import errno
import os

USAGE, FAILURE = 2, 1


def debug() -> bool:
    """Tracebacks wanted (``POURLIT_DEBUG`` or jsonargparse's ``JSONARGPARSE_DEBUG`` set)."""
    return any(
        os.environ.get(v, "") not in ("", "0") for v in ("POURLIT_DEBUG", "JSONARGPARSE_DEBUG")
    )


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes / contexts, outermost first."""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ if e.__cause__ is not None or e.__suppress_context__ else e.__context__
    return chain


def _raised_by_pourlit(e: BaseException) -> bool:
    """Whether pourlit's own code raised ``e`` (a message written for the user), whatever its
    class: the innermost frame of its traceback is in a pourlit module."""
    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).startswith("pourlit")


def yaml_reason(e: BaseException) -> str:
    """One line for a YAML parse error: where in the file and what is wrong."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return (str(e).splitlines() or [type(e).__name__])[0]


def _is_write_failure(e: BaseException) -> bool:
    return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or type(e).__name__ == (
        "RolloutWriteError"
    )


def reportable(exc: BaseException) -> bool:
    """Whether ``exc`` is about what the user gave or the machine (OSError, ValueError, a pourlit
    error, a jsonargparse or Lightning configuration error) and so gets one line; anything else
    is a bug in pourlit and keeps its traceback."""
    for e in _chain(exc):
        kind = type(e)
        if isinstance(e, (OSError, ValueError)) or kind.__module__.startswith(
            ("pourlit", "jsonargparse")
        ):
            return True
        if kind.__name__ in ("ArgumentError", "MisconfigurationException"):
            return True
    return False


def exit_code(exc: BaseException) -> int:
    """1 for a failure while running (full disk, failed write), 2 for everything the user gave."""
    return FAILURE if any(_is_write_failure(e) for e in _chain(exc)) else USAGE


def error_line(exc: BaseException) -> str:
    """The text after ``pourlit: error:``, one line.

    A full disk anywhere in the chain wins (``<path>: no space left on device``); else the
    outermost error of a pourlit class or raised by pourlit's code (it names its file; pourlit
    wraps errors only to add where), else the innermost OSError or ValueError: the
    real cause behind Lightning's and jsonargparse's wrappers. OSErrors read ``<path>: <reason>``;
    jsonargparse's multi-line messages keep the lines that name the option, not value dumps."""
    chain = _chain(exc)
    full = [e for e in chain if isinstance(e, OSError) and e.errno == errno.ENOSPC]
    if full:
        where = next((e.filename for e in full if e.filename), None)
        if where is None:  # a pourlit write error already names the path
            named = next((str(e) for e in chain if type(e).__name__ == "RolloutWriteError"), "")
            return named or "no space left on device"
        return f"{where}: no space left on device"
    ours = [e for e in chain if type(e).__module__.startswith("pourlit") or _raised_by_pourlit(e)]
    others = [e for e in chain if isinstance(e, (OSError, ValueError))]
    for e in [*ours, *reversed(others)]:
        if isinstance(e, OSError) and e.filename is not None:
            return f"{e.filename}: {e.strerror or e}"
        text = _squash(str(e))
        if text:
            return text
    return _squash(str(exc)) or type(exc).__name__


def _squash(message: str) -> str:
    """Keep at most two informative lines of a (jsonargparse) message, joined by ': '."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    keep: list[str] = []
    for ln in lines:
        if ln.startswith(("Given value", "Namespace(", "- ", "Subclass types", "Not a valid")):
            continue
        keep.append(ln.rstrip(":"))
        if len(keep) == 2:
            break
    return ": ".join(keep)
