"""RL-stage benchmark: training throughput.

    python benchmarks/bench_rl.py throughput [--updates 300] [--baseline REF]
        HL gradient updates/s and env steps/s while training, SPiRL and flat SAC (each the
        median of --repeats timed windows after warmup), from configs/rl/*.yaml; with
        --baseline, the same runs of git revision REF's SACModule alternate with the working
        tree's in one process (before/after in one run) and the ratios are printed.

The paper's comparison of methods runs on Ray Tune: ``pourlit sweep -c
configs/sweeps/rl_methods.yaml`` (``make bench-rl`` runs both).

Every figure printed comes from this run; nothing is extrapolated.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def throughput(args: argparse.Namespace) -> None:
    import lightning as L
    import torch

    from pourlit.rl import SACModule

    torch.set_num_threads(1)
    versions = {"": (SACModule, contextlib.nullcontext)}
    tmp = None
    if args.baseline:
        import tempfile

        from baseline import import_at_revision, swapped_in  # benchmarks/baseline.py

        tmp = tempfile.TemporaryDirectory()
        rl = import_at_revision(args.baseline, "pourlit.rl", tmp.name)
        versions[f" ({args.baseline})"] = (rl.SACModule, lambda: swapped_in(rl))

    class Timer(L.Callback):
        """Wall time and env steps of each window of ``every`` updates after the warmup."""

        def __init__(self, every: int) -> None:
            self.every, self.marks = every, []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            if module.warming_up or module.updates % self.every or module.updates == 0:
                return
            self.marks.append((time.perf_counter(), module.updates, module.env_steps))

    common = dict(num_envs=2, warmup_transitions=args.warmup, eval_episodes=1)
    skills = str(ROOT / "checkpoints/skills/spirl_cl.ckpt")
    setups = {
        "spirl_cl (skills, H=10)": dict(skill_ckpt=skills),
        "default (+ best of 8 by Q)": dict(skill_ckpt=skills, squash="prior", q_select=4),
        "sac (flat)": dict(prior="none", prior_init=False),
    }
    print(f"torch threads 1, num_envs 2, batch 256, {args.updates} updates after warmup")
    rates: dict[str, tuple[float, float]] = {}
    for name, kw in setups.items():
        for tag, (cls, loading) in versions.items():
            torch.manual_seed(0)
            with loading():  # its frozen prior's checkpoint names its own revision's classes
                module = cls(**common, **kw)
            timer = Timer(max(1, args.updates // args.repeats))
            trainer = L.Trainer(
                accelerator="cpu", max_steps=args.updates, logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
            )  # fmt: skip
            trainer.fit(module)
            rates_u, rates_e = [], []
            for (t0, u0, e0), (t1, u1, e1) in zip(timer.marks, timer.marks[1:], strict=False):
                rates_u.append((u1 - u0) / (t1 - t0))
                rates_e.append((e1 - e0) / (t1 - t0))
            rates[name + tag] = statistics.median(rates_u), statistics.median(rates_e)
            print(
                f"{name + tag:38s} updates/s median {rates[name + tag][0]:7.1f}   "
                f"env steps/s median {rates[name + tag][1]:7.1f}   ({len(rates_u)} windows)"
            )
        if args.baseline:
            (u, e), (u0, e0) = rates[name], rates[f"{name} ({args.baseline})"]
            print(f"{'':38s} after / before: updates/s {u / u0:.2f}x, env steps/s {e / e0:.2f}x")
    if tmp is not None:
        tmp.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--updates", type=int, default=300)
    t.add_argument("--warmup", type=int, default=300, help="transitions before updates")
    t.add_argument("--repeats", type=int, default=5)
    t.add_argument("--baseline", help="git revision to time beside the working tree")
    args = p.parse_args()
    throughput(args)


if __name__ == "__main__":
    main()
