"""DAgger-style handover episodes: ``pourlit collect --learner SKILL_CKPT``."""

from __future__ import annotations

import math
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch
from test_collect_cli import one_error_line, rollouts, run_cli

from pourlit.data import RolloutDataModule, read_episode
from pourlit.expert.pour import ScriptedPourExpert
from pourlit.replay import env_for_episode
from pourlit.rl.handover import LIFT_HEIGHT, handover_due
from pourlit.sim.env import EnvConfig, PouringVecEnv
from pourlit.sim.task import OBS_DIM, OBS_NAMES

ROOT = Path(__file__).resolve().parents[1]
SKILL_CKPT = ROOT / "checkpoints/skills/spirl_cl.ckpt"
Z = OBS_NAMES.index("bottle_pos_z")


@pytest.fixture(scope="module")
def handover_data(tmp_path_factory) -> Path:
    """Two handover episodes (the shipped prior driving, expert noise 0.3), failures kept."""
    out = tmp_path_factory.mktemp("handover") / "ds"
    rc, _, err = run_cli([
        "collect", "--episodes", "2", "--num-envs", "2", "--out", str(out), "-q",
        "--learner", str(SKILL_CKPT), "--action-noise", "0.3", "--keep-failures",
    ])  # fmt: skip
    assert rc == 0, err
    return out


def test_handover_due_reads_lift_and_pouring_from_observations() -> None:
    obs = np.zeros((3, OBS_DIM), np.float32)
    obs[:, OBS_NAMES.index("liquid_in_bottle")] = 1.0
    obs[1:, Z] = LIFT_HEIGHT + 0.01
    obs[2, OBS_NAMES.index("liquid_in_bottle")] = 0.9  # env 2: liquid leaving the bottle
    lifted, pouring = handover_due(obs)
    assert lifted.tolist() == [False, True, True]
    assert pouring.tolist() == [False, False, True]


@pytest.mark.parametrize("tilt_deg, phase", [(0.0, "carry"), (10.0, "carry"), (40.0, "tilt")])
def test_expert_takes_over_by_the_bottles_tilt(tilt_deg: float, phase: str) -> None:
    """An upright bottle (within 15 degrees) is carried first; a tilted one is poured on."""
    env = PouringVecEnv(EnvConfig(num_envs=1))
    try:
        env.reset(seed=0)
        d = env.mj_data(0)
        b = env.idx.bottle_qpos
        half = math.radians(tilt_deg) / 2
        d.qpos[b + 3 : b + 7] = [math.cos(half), math.sin(half), 0.0, 0.0]
        mujoco.mj_kinematics(env.model, d)
        expert = ScriptedPourExpert(env, seed=0)
        expert.take_over([0])
        assert expert.phase(0) == phase
        actions = expert.act([0])
        assert actions.shape == (1, 7) and np.all(np.abs(actions) <= 1)
        assert actions[0, 6] == -1.0  # the gripper stays closed
    finally:
        env.close()


def test_learner_drives_until_the_lift_then_the_expert(handover_data) -> None:
    """Before ``expert_from`` the learner acts (labels = executed actions, no noise); from it
    on the noisy expert (labels = its intended actions); the handover comes after the lift,
    and the file replays exactly from its seed like any rollout."""
    files = rollouts(handover_data)
    assert len(files) == 2
    for name in files:
        ep = read_episode(handover_data / name)
        k = int(ep.attrs["expert_from"])
        assert 0 < k < ep.length
        assert ep.attrs["learner"] == str(SKILL_CKPT)
        assert ep.states[k, Z] > LIFT_HEIGHT
        assert np.all(ep.states[: k - 120, Z] <= LIFT_HEIGHT)  # first lifted <= 120 steps before
        np.testing.assert_array_equal(ep.expert_actions[:k], ep.actions[:k])
        diff = (ep.actions[k:] - ep.expert_actions[k:])[np.abs(ep.actions[k:]) < 1]
        assert diff.size > 40 and 0.2 < float(diff.std()) < 0.4
        env = env_for_episode(ep)
        try:
            obs = env.reset_to([ep.attrs["seed"]])
            for t in range(1, min(ep.length, k + 20)):
                obs, *_ = env.step(torch.as_tensor(ep.actions[t - 1][None]))
            np.testing.assert_allclose(obs[0].numpy(), ep.states[t], atol=1e-5)
        finally:
            env.close()


def test_datamodule_trains_on_the_expert_part_only(handover_data) -> None:
    dm = RolloutDataModule(
        data_dir=str(handover_data), horizon=10, batch_size=4,
        action_labels="expert_actions",
    )  # fmt: skip
    dm.setup("fit")
    eps = [read_episode(handover_data / n) for n in rollouts(handover_data)]
    want = {ep.length - int(ep.attrs["expert_from"]) for ep in eps}
    sets = [dm._dataset(which, 8, 0) for which in ("train", "val")]  # one episode each
    assert {int(ds.lengths[0]) for ds in sets} == want
    first = [ep.expert_actions[int(ep.attrs["expert_from"])] for ep in eps]
    rows = [tuple(ds.actions[0]) for ds in sets]
    assert sorted(rows) == sorted(map(tuple, np.asarray(first, np.float32)))


def test_missing_or_foreign_learner_is_one_line_and_writes_nothing(tmp_path) -> None:
    out = tmp_path / "never"
    rc, _, err = run_cli(["collect", "--out", str(out), "-q", "--learner", str(tmp_path / "x")])
    assert rc == 2 and "learner checkpoint not found" in one_error_line(err)
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    rc, _, err = run_cli(["collect", "--out", str(out), "-q", "--learner", str(bogus)])
    assert (
        one_error_line(err)
        == f"pourlit: error: {bogus}: not a pourlit skill checkpoint (UnpicklingError)"
    )
    assert rc == 2
    rc, _, err = run_cli(["collect", "--out", str(out), "-q", "--handover-delay", "-1"])
    assert rc == 2 and "handover_delay must be >= 0" in one_error_line(err)
    assert not out.exists()
