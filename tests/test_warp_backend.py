"""The MuJoCo Warp backend (pourlit.sim.warp_backend) on Warp's CPU device, against the CPU
backend: same env API, same task code. Skipped only when mujoco-warp is not installed
(``make setup`` installs it). Tolerances are for float32 (Warp) vs float64 (C MuJoCo).

The first test in a fresh process compiles MuJoCo Warp's kernels (~45 s on 2 cores, cached in
~/.cache/warp afterwards).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("mujoco_warp", reason="mujoco-warp not installed (pip install 'pourlit[warp]')")

from pourlit.expert.pour import ScriptedPourExpert  # noqa: E402
from pourlit.sim.env import EnvConfig, PouringVecEnv  # noqa: E402
from pourlit.sim.warp_backend import (  # noqa: E402
    ContactOverflowError,
    check_interpenetration,
    contact_budget,
)

OBS_ATOL = 5e-3  # max |obs_warp - obs_cpu| over the first 50 control steps


def _pair(n: int, **kw) -> tuple[PouringVecEnv, PouringVecEnv]:
    cpu = PouringVecEnv(EnvConfig(num_envs=n, **kw))
    warp = PouringVecEnv(EnvConfig(num_envs=n, backend="mujoco_warp", device="cpu", **kw))
    return cpu, warp


def test_contact_budget_covers_the_measured_maxima() -> None:
    from pourlit.sim.scene import LiquidConfig, build_model

    model, _ = build_model(LiquidConfig())
    ncon, njmax = contact_budget(model)
    assert ncon >= 139 and njmax >= 176  # the most a whole expert pour needed (32 spheres)
    big, _ = build_model(LiquidConfig(count=64))
    assert contact_budget(big)[0] > ncon


def test_same_observations_as_the_cpu_backend_for_50_expert_steps() -> None:
    cpu, warp = _pair(2)
    try:
        o_cpu, o_warp = cpu.reset(seed=5), warp.reset(seed=5)
        torch.testing.assert_close(o_warp, o_cpu, atol=1e-4, rtol=0)
        experts = [ScriptedPourExpert(e, seed=1) for e in (cpu, warp)]
        for ex in experts:
            ex.begin()
        worst = 0.0
        for _ in range(50):
            a = torch.as_tensor(experts[0].act(), dtype=torch.float32)  # same actions for both
            experts[1].act()  # keeps its own plan in step
            o_cpu, r_cpu, t_cpu, u_cpu, _ = cpu.step(a)
            o_warp, r_warp, t_warp, u_warp, _ = warp.step(a)
            worst = max(worst, float((o_warp - o_cpu).abs().max()))
            assert torch.equal(t_cpu, t_warp) and torch.equal(u_cpu, u_warp)
            torch.testing.assert_close(r_warp, r_cpu, atol=1e-3, rtol=0)
        assert worst < OBS_ATOL, worst
        assert o_warp.device.type == "cpu" and o_warp.dtype == torch.float32
    finally:
        cpu.close()
        warp.close()


@pytest.mark.slow
def test_expert_episode_pours_the_same_on_both_backends() -> None:
    """Each backend runs the scripted expert closed loop on the same episode seed: the liquid
    is chaotic, so only the outcome is compared (poured fraction within 0.1, same success)."""
    results = []
    for backend in ("mujoco", "mujoco_warp"):
        env = PouringVecEnv(EnvConfig(num_envs=1, backend=backend, device="cpu"))
        try:
            env.reset_to([1421746521])
            expert = ScriptedPourExpert(env, seed=0)
            expert.begin()
            for _ in range(env.cfg.max_episode_steps):
                _, _, term, trunc, info = env.step(torch.as_tensor(expert.act()))
                if bool(term[0] | trunc[0]):
                    break
            results.append((float(info["poured_fraction"][0]), bool(info["success"][0])))
        finally:
            env.close()
    (p_cpu, s_cpu), (p_warp, s_warp) = results
    assert s_cpu and s_warp, results
    assert abs(p_cpu - p_warp) <= 0.1, results


def test_contact_overflow_is_an_error_naming_the_worlds() -> None:
    env = PouringVecEnv(EnvConfig(num_envs=2, backend="mujoco_warp", device="cpu", nconmax=8))
    try:
        env.reset(seed=0)
        with pytest.raises(ContactOverflowError, match=r"world\(s\) \[0, 1\].*nconmax=8"):
            for _ in range(3):
                env.step(torch.zeros(2, 7))
    finally:
        env.close()


def test_initial_interpenetration_is_refused() -> None:
    from pourlit.sim.scene import LiquidConfig, build_model

    env = PouringVecEnv(EnvConfig(num_envs=1))
    try:
        qpos = env.sample_initial_qpos(0)
        check_interpenetration(env.model, qpos)  # a sampled initial state is clean
        qpos[env.idx.bottle_qpos + 2] = -0.05  # sink the bottle 5 cm into the table
        with pytest.raises(ValueError, match="interpenetrates: .* overlap by"):
            check_interpenetration(env.model, qpos)
    finally:
        env.close()
    assert build_model(LiquidConfig())[0].nq == env.model.nq


def test_state_dict_continues_identically() -> None:
    _, warp = _pair(2)
    other = PouringVecEnv(EnvConfig(num_envs=2, backend="mujoco_warp", device="cpu"))
    try:
        warp.reset(seed=2)
        g = torch.Generator().manual_seed(0)
        acts = [torch.rand(2, 7, generator=g) * 2 - 1 for _ in range(6)]
        for a in acts[:3]:
            warp.step(a)
        other.load_state_dict(warp.state_dict())
        for a in acts[3:]:
            o1, r1, *_ = warp.step(a)
            o2, r2, *_ = other.step(a)
            assert torch.equal(o1, o2) and torch.equal(r1, r2)
    finally:
        warp.close()
        other.close()


def test_missing_mujoco_warp_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mujoco_warp", None)
    with pytest.raises(ImportError, match=r"pip install 'pourlit\[warp\]'"):
        PouringVecEnv(EnvConfig(num_envs=1, backend="mujoco_warp", device="cpu"))


def test_collect_runs_on_the_warp_backend(tmp_path) -> None:
    from pourlit.cli import main
    from pourlit.data.rollout import read_episode

    out = tmp_path / "data"
    args = ["collect", "--episodes", "1", "--out", str(out), "-q", "--keep-failures"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("env:\n  backend: mujoco_warp\n  device: cpu\n  max_episode_steps: 40\n")
    assert main([*args, "-c", str(cfg)]) == 0
    ep = read_episode(next(out.glob("rollout_*.h5")))
    assert ep.states.shape == (40, 50) or ep.states.shape[0] in (40, 41)
    assert ep.attrs["env_config"]["backend"] == "mujoco_warp"
    assert np.isfinite(ep.states).all()


def test_rl_training_runs_on_the_warp_backend(tmp_path) -> None:
    import lightning as L

    from pourlit.rl import SACModule

    m = SACModule(
        prior="none", prior_init=False, critic_hidden=32, warmup_transitions=6, batch_size=8,
        env={"backend": "mujoco_warp", "device": "cpu", "max_episode_steps": 10},
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", max_steps=5, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(m)
    assert m.updates == 5 and m.env_steps >= 10
    assert m.env_steps - 2 <= len(m.replay) <= m.env_steps  # the running actions: one per env
