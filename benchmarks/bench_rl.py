"""RL-stage benchmarks: training throughput, and the paper's comparison of methods.

    python benchmarks/bench_rl.py throughput [--updates 300]
        HL gradient updates/s and env steps/s while training, SPiRL and flat SAC (each the
        median of --repeats timed windows after warmup), from configs/rl/*.yaml.

    python benchmarks/bench_rl.py compare --budget 300000 --seeds 0 1 2 \
        --methods spirl_cl flat_prior ssp bc_sac sac --out runs/bench_rl
        Trains every method x seed with ``pourlit fit -c configs/rl/METHOD.yaml`` up to
        ``--budget`` env steps (model.max_env_steps, warmup included), evaluates each final
        policy on --episodes held-out episodes (seed 10000), and writes OUT/results.md (table:
        mean +- std over seeds of success rate, poured fraction, return) and
        OUT/learning_curves.png (all methods, seed 0 curves). Runs one training at a time;
        use --jobs 2 to run two at once (one per core).

Every figure printed comes from this run; nothing is extrapolated.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def throughput(args: argparse.Namespace) -> None:
    import lightning as L
    import torch

    from pourlit.rl import SACModule

    torch.set_num_threads(1)

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
    for name, kw in setups.items():
        torch.manual_seed(0)
        module = SACModule(**common, **kw)
        timer = Timer(max(1, args.updates // args.repeats))
        trainer = L.Trainer(
            accelerator="cpu", max_steps=args.updates, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
            callbacks=[timer],
        )  # fmt: skip
        trainer.fit(module)
        rates_u, rates_e = [], []
        for (t0, u0, e0), (t1, u1, e1) in zip(timer.marks, timer.marks[1:], strict=False):
            rates_u.append((u1 - u0) / (t1 - t0))
            rates_e.append((e1 - e0) / (t1 - t0))
        print(
            f"{name:26s} updates/s median {statistics.median(rates_u):7.1f}   "
            f"env steps/s median {statistics.median(rates_e):7.1f}   ({len(rates_u)} windows)"
        )


SKILL_METHODS = ("spirl_cl", "ssp")  # one transition per H = 10 env steps; the rest: per step


def _train(method: str, seed: int, budget: int, out: Path, warmup: int, extra: list[str]) -> Path:
    from pourlit.lightning_cli import rl_checkpoint_callbacks

    run = out / method / f"seed{seed}"
    transitions = warmup // 10 if method in SKILL_METHODS else warmup
    cmd = [
        PYTHON, "-m", "pourlit.cli", "fit", "-c", str(ROOT / f"configs/rl/{method}.yaml"),
        "--seed_everything", str(seed), "--model.init_args.seed", str(seed),
        "--model.init_args.max_env_steps", str(budget),
        "--model.init_args.warmup_transitions", str(transitions),
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(run),
        "--trainer.logger.init_args.save_dir", str(run),
        "--trainer.callbacks", rl_checkpoint_callbacks(str(run / "checkpoints")),
        *extra,
    ]  # fmt: skip
    log = run.parent / f"seed{seed}.log"
    run.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    return run


def _evaluate(run: Path, episodes: int) -> dict:
    out = run / "eval.json"
    cmd = [PYTHON, "-m", "pourlit.cli", "evaluate", "--ckpt", str(run / "checkpoints/last.ckpt")]
    cmd += ["--episodes", str(episodes), "--seed", "10000", "-q", "--json", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def compare(args: argparse.Namespace) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from pourlit.report import plot_curves

    out = Path(args.out)
    jobs = [(m, s) for m in args.methods for s in args.seeds]
    start = time.perf_counter()

    def one(job: tuple[str, int]) -> tuple[str, int, dict, float]:
        m, s = job
        t0 = time.perf_counter()
        run = out / m / f"seed{s}"
        done = run / "eval.json"
        if args.reuse and done.is_file():  # finished in an earlier invocation: same settings
            res = json.loads(done.read_text())
            return m, s, res, float(res.get("wall_minutes", 0.0)) * 60
        extra = list(args.extra)
        if m not in SKILL_METHODS and args.flat_updates is not None:
            extra += ["--model.init_args.updates_per_transition", str(args.flat_updates)]
        run = _train(m, s, args.budget, out, args.warmup_env_steps, extra)
        res = _evaluate(run, args.episodes)
        dt = time.perf_counter() - t0
        res["wall_minutes"] = round(dt / 60, 2)
        done.write_text(json.dumps(res, indent=2) + "\n")
        print(
            f"{m:11s} seed {s}: success {res['success_rate']:.2f} ({dt / 60:.1f} min)", flush=True
        )
        return m, s, res, dt

    env = dict(os.environ, POURLIT_TORCH_THREADS="1")
    os.environ.update(env)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, jobs))
    rows = [
        "| method | seeds | success rate | poured fraction | return | minutes/run |",
        "|---|---|---|---|---|---|",
    ]
    for m in args.methods:
        rs = [r for r in results if r[0] == m]

        def ms(key: str, rs: list = rs) -> str:
            v = [r[2][key] for r in rs]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            return f"{statistics.mean(v):.2f} +- {sd:.2f}"

        mins = statistics.mean(r[3] for r in rs) / 60
        rows.append(
            f"| {m} | {len(rs)} | {ms('success_rate')} | {ms('mean_poured_fraction')} | "
            f"{ms('mean_return')} | {mins:.1f} |"
        )
    head = (
        f"Budget {args.budget} env steps per run ({args.warmup_env_steps} of them warmup), "
        f"flat methods' updates per env step: "
        f"{args.flat_updates if args.flat_updates is not None else 1}, {args.episodes} held-out "
        f"evaluation episodes (seed 10000, deterministic policy) per run; total wall "
        f"{(time.perf_counter() - start) / 60:.1f} min with {args.jobs} job(s)."
    )
    table = head + "\n\n" + "\n".join(rows) + "\n"
    (out / "results.md").write_text(table)
    seed0 = {m: out / m / f"seed{args.seeds[0]}" for m in args.methods}
    plot_curves(
        seed0, out / "learning_curves.png", f"seed {args.seeds[0]}, {args.budget} env steps"
    )
    print(table)
    print(f"wrote {out / 'results.md'} and {out / 'learning_curves.png'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--updates", type=int, default=300)
    t.add_argument("--warmup", type=int, default=300, help="transitions before updates")
    t.add_argument("--repeats", type=int, default=5)
    c = sub.add_parser("compare")
    c.add_argument("--budget", type=int, default=300_000)
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    c.add_argument(
        "--methods", nargs="+", default=["spirl_cl", "flat_prior", "ssp", "bc_sac", "sac"]
    )
    c.add_argument("--episodes", type=int, default=100)
    c.add_argument(
        "--warmup-env-steps", type=int, default=50_000,
        help="env steps of warmup for every method (spirl.md: 5000 HL transitions = 50k)",
    )  # fmt: skip
    c.add_argument("--jobs", type=int, default=1)
    c.add_argument(
        "--flat-updates", type=float, default=None,
        help="updates_per_transition of the flat methods (default: their config's, 1 per env "
        "step); 0.1 matches SPiRL's gradient updates per env step",
    )  # fmt: skip
    c.add_argument("--reuse", action="store_true", help="keep runs that have an eval.json")
    c.add_argument("--out", default="runs/bench_rl")
    c.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more fit flags")
    args = p.parse_args()
    throughput(args) if args.cmd == "throughput" else compare(args)


if __name__ == "__main__":
    main()
