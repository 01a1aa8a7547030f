"""Env control steps/s vs number of environments on the MuJoCo Warp backend (``make bench-gpu``).

Runs on whichever device is present: CUDA if torch sees a GPU (sweep 1 ... 8192 envs), else
Warp's CPU device with a small sweep (1 ... 16 envs), which it says. Each point: build the env,
reset, step zero actions ``--warmup`` times (graph capture, first launches), then time
``--steps`` control steps (20 physics steps each) ``--repeats`` times and print the median
rate. The CPU backend (``mujoco``, C MuJoCo threads) is printed alongside for reference on a
CPU-only machine. Nothing is extrapolated: every number printed was measured in this run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

import pourlit  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)
from pourlit.sim.env import EnvConfig, PouringVecEnv


def rate(backend: str, device: str, n: int, steps: int, warmup: int, repeats: int) -> float:
    env = PouringVecEnv(EnvConfig(num_envs=n, backend=backend, device=device))
    try:
        env.reset(seed=0)
        zeros = torch.zeros(n, env.action_dim, device=env.device)
        for _ in range(warmup):
            env.step(zeros)
        rates = []
        for _ in range(repeats):
            if env.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                env.step(zeros)
            if env.device.type == "cuda":
                torch.cuda.synchronize()
            rates.append(n * steps / (time.perf_counter() - t0))
        return statistics.median(rates)
    finally:
        env.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--envs", type=int, nargs="+", help="env counts (default: by device)")
    p.add_argument("--steps", type=int, default=None, help="timed control steps per repeat")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    envs = args.envs or ([1, 8, 64, 512, 1024, 2048, 4096, 8192] if cuda else [1, 2, 4, 8, 16])
    steps = args.steps or (50 if cuda else 10)
    torch.set_num_threads(1)
    if cuda:
        print(f"device: {torch.cuda.get_device_name(0)} (CUDA), torch {torch.__version__}")
    else:
        print(
            f"device: no CUDA GPU; MuJoCo Warp on Warp's CPU device (single-threaded kernels), "
            f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}. A small "
            "sweep: GPU figures need a GPU machine."
        )
    print(f"{steps} control steps x {args.repeats} repeats per point (median), zero actions")
    print(
        f"{'envs':>6} {'warp steps/s':>14} {'per env':>9}"
        + ("" if cuda else f" {'cpu backend':>12}")
    )
    base = None
    for n in envs:
        r = rate("mujoco_warp", device, n, steps, args.warmup, args.repeats)
        base = base or r
        line = f"{n:6d} {r:14.1f} {r / n:9.2f}"
        if not cuda:
            line += f" {rate('mujoco', 'cpu', n, steps, args.warmup, args.repeats):12.1f}"
        print(line + f"   scaling x{r / base:.2f} vs {envs[0]} env(s)", flush=True)


if __name__ == "__main__":
    main()
