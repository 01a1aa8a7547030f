"""Shared test setup.

``import pourlit`` sets ``MUJOCO_GL`` (EGL, headless) and must happen before the first
``import mujoco`` anywhere in the test session, because MuJoCo picks its OpenGL platform when
it is first imported. conftest.py is imported before every test module, so this does it.
"""

import pourlit  # noqa: F401
