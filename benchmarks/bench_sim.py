"""Simulator throughput: raw MuJoCo stepping vs the pourlit env on the same model.

Prints (median of --repeats runs, all in one process so they share the machine's state):
  raw      physics steps/s of mj_step on one MjData (the limit), and the control-step rate it
           implies (physics rate / control_substeps)
  env N=1  control steps/s of PouringVecEnv with one environment; overhead vs raw
  env N=k  environment steps/s with k environments stepped in parallel; speed-up vs N=1
  mujoco.rollout N=k  MuJoCo's own batch stepping of the same k simulations, no wrapper:
           the wrapper's overhead at N=k is measured against it

Both raw and env hold the same actions (the arm holding its start pose, the liquid at rest
in the bottle) from the same seeded start states, so they do the same physics.

The goals: env N=1 / raw >= 0.85 and env N=2 / mujoco.rollout N=2 >= 0.85 (printed at the end).

``--baseline REF`` also times the env of git revision REF (e.g. ``main``) in the same process,
interleaved with everything else, so a before/after comparison sees the same machine load: the
``pourlit`` package of REF is extracted with ``git archive`` into a temporary directory and
imported beside the working tree's.

    python benchmarks/bench_sim.py [--steps 200] [--repeats 5] [--num-envs 2 4 8] [--json out]
                                   [--baseline main]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from typing import Any

import mujoco
import numpy as np
import torch
from baseline import import_at_revision  # benchmarks/baseline.py (run as a script)

from pourlit.sim.env import EnvConfig, PouringVecEnv


def raw_physics_rate(env: PouringVecEnv, steps: int, seed: int) -> float:
    """mj_step physics steps/s on one MjData from the env's start state (no Python per step
    beyond the loop itself)."""
    m = env.model
    d = mujoco.MjData(m)
    d.qpos[:] = env.sample_initial_qpos(seed)
    d.ctrl[:6] = d.qpos[env.idx.arm_qpos]
    d.ctrl[6] = 0.085
    mujoco.mj_forward(m, d)
    n = steps * env.cfg.control_substeps
    t = time.perf_counter()
    for _ in range(n):
        mujoco.mj_step(m, d)
    return n / (time.perf_counter() - t)


def batch_rate(env: PouringVecEnv, steps: int, seed: int) -> float:
    """Environment steps/s of MuJoCo's own batch stepping (``mujoco.rollout`` thread pool) of
    the env's N simulations, same states and controls, without the pourlit wrapper."""
    env.reset_to([seed + i for i in range(env.num_envs)])
    b = env.backend
    sub = env.cfg.control_substeps
    state = b.state.copy()
    ctrl = np.repeat(b.ctrl[:, None, :], sub, axis=1)
    out = np.empty((env.num_envs, sub, b.nstate))
    warm = np.zeros((env.num_envs, env.model.nv))
    t = time.perf_counter()
    for _ in range(steps):
        b._pool.rollout(
            b._models,
            b._scratch,
            state,
            ctrl,
            initial_warmstart=warm,
            nstep=sub,
            state=out,
            skip_checks=True,
        )
        state[:] = out[:, -1]
    return env.num_envs * steps / (time.perf_counter() - t)


def env_rate(env: PouringVecEnv, steps: int, seed: int) -> float:
    """Environment steps/s (N environments x control steps) with zero actions."""
    env.reset_to([seed + i for i in range(env.num_envs)])
    zeros = torch.zeros(env.num_envs, env.action_dim)
    env.step(zeros)  # warm-up (allocations)
    t = time.perf_counter()
    for _ in range(steps):
        env.step(zeros)
    return env.num_envs * steps / (time.perf_counter() - t)


def load_baseline(ref: str, into: str) -> tuple[Any, Any]:
    """(EnvConfig, PouringVecEnv) of the ``pourlit`` package at git revision ``ref``, imported
    from ``into`` beside the working tree's (``baseline.import_at_revision``)."""
    mod = import_at_revision(ref, "pourlit.sim.env", into)
    return mod.EnvConfig, mod.PouringVecEnv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=150, help="control steps per timing run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--num-envs", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--liquid", type=int, default=32, help="number of liquid spheres")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--baseline", metavar="REF", help="also time the env of git revision REF")
    args = ap.parse_args()
    torch.set_num_threads(1)
    layout = {"liquid": {"count": args.liquid}}
    envs = {
        n: PouringVecEnv(EnvConfig.from_dict({"num_envs": n, **layout}))
        for n in [1, *args.num_envs]
    }
    base_envs: dict[int, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            base_cfg, base_env = load_baseline(args.baseline, tmp)
            base_envs = {n: base_env(base_cfg.from_dict({"num_envs": n, **layout})) for n in envs}
        sub = envs[1].cfg.control_substeps
        raw, rates, batch = [], {n: [] for n in envs}, {n: [] for n in envs}
        base_rates: dict[int, list[float]] = {n: [] for n in base_envs}
        for r in range(args.repeats):  # interleaved so every figure sees the same machine load
            raw.append(raw_physics_rate(envs[1], args.steps, seed=r))
            for n, env in envs.items():
                batch[n].append(batch_rate(env, args.steps, seed=100 * r))
                rates[n].append(env_rate(env, args.steps, seed=100 * r))
                if n in base_envs:
                    base_rates[n].append(env_rate(base_envs[n], args.steps, seed=100 * r))
        for env in [*envs.values(), *base_envs.values()]:
            env.close()

    raw_med = statistics.median(raw)
    raw_ctrl = raw_med / sub
    one = statistics.median(rates[1])
    res = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "mujoco": mujoco.__version__,
        "liquid_spheres": args.liquid,
        "control_substeps": sub,
        "repeats": args.repeats,
        "raw_physics_steps_per_s": round(raw_med),
        "raw_control_steps_per_s": round(raw_ctrl, 1),
        "env": {},
        "baseline": args.baseline,
        "baseline_env": {},
    }
    print(f"pourlit simulator benchmark  {res['date']}  {res['machine']}  mujoco {res['mujoco']}")
    print(f"scene: {args.liquid} liquid spheres, {sub} x 2 ms physics steps per control step")
    print(f"medians of {args.repeats} interleaved runs of {args.steps} control steps\n")
    print(f"{'':24s}{'steps/s':>12s}{'vs raw':>10s}{'vs N=1':>10s}{'vs batch N':>12s}")
    print(f"{'raw mj_step (physics)':24s}{raw_med:12.0f}")
    print(f"{'raw (control steps)':24s}{raw_ctrl:12.1f}{1.0:10.2f}")
    for n in envs:
        med = statistics.median(rates[n])
        bmed = statistics.median(batch[n])
        res["env"][n] = {
            "env_steps_per_s": round(med, 1),
            "mujoco_batch_steps_per_s": round(bmed, 1),
            "ratio_vs_raw": round(med / raw_ctrl, 3),
            "ratio_vs_batch": round(med / bmed, 3),
            "speedup_vs_1": round(med / one, 2),
        }
        print(f"{f'mujoco.rollout N={n}':24s}{bmed:12.1f}{bmed / raw_ctrl:10.2f}")
        print(
            f"{f'env N={n}':24s}{med:12.1f}{med / raw_ctrl:10.2f}{med / one:10.2f}{med / bmed:12.2f}"
        )
        if n in base_rates:
            bl = statistics.median(base_rates[n])
            bl_one = statistics.median(base_rates[1])
            res["baseline_env"][n] = {
                "env_steps_per_s": round(bl, 1),
                "ratio_vs_raw": round(bl / raw_ctrl, 3),
                "ratio_vs_batch": round(bl / bmed, 3),
            }
            label = f"env N={n} ({args.baseline})"
            print(f"{label:24s}{bl:12.1f}{bl / raw_ctrl:10.2f}{bl / bl_one:10.2f}{bl / bmed:12.2f}")
    overhead = 1.0 - one / raw_ctrl
    res["wrapper_overhead_N1"] = round(overhead, 3)

    def was(n: int, key: str) -> str:
        return f"  ({args.baseline}: {res['baseline_env'][n][key]:.2f})" if base_envs else ""

    print(
        f"\nenv N=1 / raw (control steps): {res['env'][1]['ratio_vs_raw']:.2f} (goal >= 0.85)"
        + was(1, "ratio_vs_raw")
    )
    for n in args.num_envs:
        goal = " (goal >= 0.85)" if n == 2 else ""
        print(
            f"env N={n} / mujoco.rollout N={n}: {res['env'][n]['ratio_vs_batch']:.2f}{goal}"
            + was(n, "ratio_vs_batch")
        )
    best = max(args.num_envs, key=lambda n: res["env"][n]["speedup_vs_1"])
    print(
        f"parallel speed-up: {res['env'][best]['speedup_vs_1']:.2f}x at N={best} "
        f"on {os.cpu_count()} cores (goal >= 1.7x)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
