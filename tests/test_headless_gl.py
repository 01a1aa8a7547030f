"""Choice of MuJoCo's headless OpenGL platform (pourlit sets MUJOCO_GL before mujoco loads)."""

from __future__ import annotations

import ctypes.util

import pytest

import pourlit


@pytest.mark.parametrize(
    ("available", "expected"),
    [({"EGL", "OSMesa"}, "egl"), ({"OSMesa"}, "osmesa"), (set(), "egl")],
)
def test_headless_gl_prefers_egl_then_osmesa(monkeypatch, available, expected) -> None:
    monkeypatch.setattr(
        ctypes.util, "find_library", lambda name: f"lib{name}.so" if name in available else None
    )
    assert pourlit._headless_gl() == expected
