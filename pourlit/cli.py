"""The ``pourlit`` command line.

    pourlit collect -c configs/collect/pouring.yaml --episodes 200 --num-envs 4 --out DIR
    pourlit inspect DIR_OR_FILE
    pourlit render DIR/rollout_00003.h5 -o ep3.mp4
    pourlit scene -o scene.xml [--liquid-count 64]
    pourlit fit|validate|test -c configs/skills/spirl_cl.yaml [--ckpt_path last]   (LightningCLI)
    pourlit evaluate --ckpt SKILL.ckpt --episodes 50 [--video out.mp4]
    pourlit sweep -c configs/sweeps/rl_methods.yaml [--resume] [--address RAY_ADDRESS]
    pourlit export runs/rl/default/checkpoints/best.ckpt checkpoints/rl/default.ckpt

Errors print one line ``pourlit: error: <what and where>`` and exit with status 2 (what the
user gave: config, paths, files) or 1 (a failure while running: a full disk); see
``pourlit.errors``. ``POURLIT_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import tempfile
from pathlib import Path

from pourlit.files import write_atomic


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else None


def check_output(path: str | Path | None, what: str = "output") -> None:
    """Fail before any work if ``path`` cannot be written: its folder is created if missing and
    must accept a new file. The file itself is not created."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{what} path is a folder", str(p))
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p.parent, prefix=f".{p.name}.check-"):
            pass
    except OSError as e:
        raise OSError(e.errno, f"{what} not writable ({e.strerror})", str(p)) from None


def _cmd_collect(args: argparse.Namespace) -> int:
    from pourlit.collect import collect, load_collect_config

    overrides = {
        "episodes": args.episodes,
        "num_envs": args.num_envs,
        "out": args.out,
        "seed": args.seed,
        "keep_failures": True if args.keep_failures else None,
        "images": True if args.images else None,
        "action_noise": args.action_noise,
        "learner": args.learner,
        "handover_delay": args.handover_delay,
        "rank": args.rank if args.rank is not None else _env_int("RANK"),
        "world_size": args.world_size if args.world_size is not None else _env_int("WORLD_SIZE"),
    }
    cfg = load_collect_config(args.config, overrides)
    summary = collect(cfg, progress=not args.quiet)
    keys = ("episodes_attempted", "episodes_written", "success_rate", "mean_poured_fraction")
    keys += ("mean_spilled_fraction", "env_steps", "wall_seconds", "env_steps_per_second")
    print(json.dumps({k: summary[k] for k in keys}))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from pourlit.data.summary import format_summary, summarize

    path = Path(args.path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    summary = summarize(path)
    print(format_summary(summary))
    if path.is_dir() and summary.files:
        from pourlit.data.folder import SUMMARY_NAME, update_summary

        try:  # bring the folder's summary.json up to date with its files (e.g. after a kill)
            update_summary(path)
        except OSError as e:
            print(f"pourlit: warning: {path / SUMMARY_NAME} not refreshed: {e}", file=sys.stderr)
    if summary.files == 0:
        print(f"pourlit: error: {path}: no rollout_*.h5 files found", file=sys.stderr)
        return 1
    return 1 if summary.bad_files and args.strict else 0


def _cmd_render(args: argparse.Namespace) -> int:
    from pourlit.replay import render_episode

    check_output(args.output, "-o")
    info = render_episode(
        args.file,
        args.output,
        source=args.source,
        camera=args.camera,
        size=(args.height, args.width),
        fps=args.fps,
    )
    print(json.dumps(info))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pourlit.evaluate import evaluate

    check_output(args.json, "--json")
    check_output(args.video, "--video")
    result = evaluate(
        args.ckpt,
        policy=args.policy,
        episodes=args.episodes,
        num_envs=args.num_envs,
        seed=args.seed,
        video=args.video,
        progress=not args.quiet,
        mode=args.mode,
        report=lambda r: print(json.dumps(r), flush=True),  # before any write: none loses it
    )
    if args.json:
        write_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pourlit.checkpoints import export_checkpoint

    check_output(args.dst, "dst")
    out = export_checkpoint(args.src, args.dst)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pourlit.report import write_report

    evals = {}
    for item in args.eval or []:
        label, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--eval {item!r}: expected LABEL=PATH.json")
        evals[label] = path
    check_output(args.output, "-o")
    out = write_report(args.output, args.run, evals, args.video, args.collect_summary)
    print(f"wrote {out} and {out.parent / 'learning_curve.png'}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from pourlit.sweep import load_sweep, run_sweep, unfinished

    spec = load_sweep(args.config, out=args.out)
    if args.cpus is not None:
        spec.resources["cpu"] = args.cpus
    out = run_sweep(spec, resume=args.resume, address=args.address)
    print(out.read_text())
    print(f"wrote {out}, {out.parent / 'results.json'} and {out.parent / 'learning_curves.png'}")
    trials = json.loads((out.parent / "results.json").read_text())
    if left := len(unfinished(trials)):
        print(
            f"pourlit: error: {spec.folder}: {left} of {len(trials)} trials unfinished "
            f"(interrupted); --resume continues them",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_scene(args: argparse.Namespace) -> int:
    from pourlit.sim.scene import LiquidConfig, build_spec

    spec = build_spec(LiquidConfig(count=args.liquid_count, radius=args.liquid_radius))
    check_output(args.output, "-o")
    spec.compile()
    out = Path(args.output)
    write_atomic(out, spec.to_xml())
    print(f"wrote {out} (open with: python -m mujoco.viewer --mjcf {out})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pourlit",
        description="Learn a robot pouring skill from demonstrations (SPiRL). "
        "Training: pourlit fit|validate|test -c CONFIG.yaml (LightningCLI; see --help there).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("collect", help="run the scripted expert and write rollout HDF5 files")
    c.add_argument("-c", "--config", help="YAML collect config (flags override it)")
    c.add_argument("--episodes", type=int, help="episodes to attempt")
    c.add_argument("--num-envs", type=int, help="environments stepped in parallel")
    c.add_argument("--out", help="output folder (numbering continues if it has files)")
    c.add_argument("--seed", type=int)
    c.add_argument("--keep-failures", action="store_true", help="also write failed episodes")
    c.add_argument("--images", action="store_true", help="store camera images (traj0/images)")
    c.add_argument("--action-noise", type=float, help="std of noise on the expert's actions")
    c.add_argument(
        "--learner",
        help="skill checkpoint whose prior rollouts drive until the expert takes over "
        "(DAgger-style handover episodes; see pourlit.rl.handover)",
    )
    c.add_argument(
        "--handover-delay", type=int, help="max control steps after the lift before the handover"
    )
    c.add_argument("--rank", type=int, help="shard index (default: $RANK or 0)")
    c.add_argument("--world-size", type=int, help="number of shards (default: $WORLD_SIZE or 1)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_cmd_collect)

    i = sub.add_parser("inspect", help="summarise a rollout file or folder")
    i.add_argument("path")
    i.add_argument("--strict", action="store_true", help="exit 1 if any file is malformed")
    i.set_defaults(func=_cmd_inspect)

    r = sub.add_parser("render", help="render a stored episode to mp4/gif")
    r.add_argument("file")
    r.add_argument("-o", "--output", required=True, help="video path (.mp4 or .gif)")
    r.add_argument(
        "--source",
        choices=("auto", "replay", "images"),
        default="auto",
        help="replay actions in the simulator, or use stored images (auto: images if stored)",
    )
    r.add_argument("--camera", default="front")
    r.add_argument("--height", type=int, default=240)
    r.add_argument("--width", type=int, default=320)
    r.add_argument("--fps", type=int, default=25)
    r.set_defaults(func=_cmd_render)

    e = sub.add_parser("evaluate", help="roll out a policy on held-out seeds, print metrics")
    e.add_argument(
        "--ckpt",
        help="RL checkpoint (see --mode), skill checkpoint (prior rollouts) or action-prior checkpoint (BC)",
    )
    e.add_argument("--policy", choices=("auto", "expert"), default="auto")
    e.add_argument("--episodes", type=int, default=50)
    e.add_argument("--num-envs", type=int, default=2)
    e.add_argument("--seed", type=int, default=10_000, help="env seed (held out from collect)")
    e.add_argument("--video", help="write env 0's first episode to this .mp4/.gif")
    e.add_argument("--json", help="also write the metrics to this file")
    e.add_argument(
        "--mode",
        choices=("both", "sampled", "mean", "best_mean"),
        default="both",
        help="RL and skill checkpoints: sampled skills as the agent acts (prior: z ~ q_hat; the "
        "headline metrics), the mean skill, best_mean (RL: the policy's mean skill or the "
        "prior's, whichever its critic values higher), or both (default: sampled, plus "
        "mean_skill on the same seeds)",
    )
    e.add_argument("-q", "--quiet", action="store_true")
    e.set_defaults(func=_cmd_evaluate)

    x = sub.add_parser(
        "export", help="small inference copy of a checkpoint (weights only; not for resuming)"
    )
    x.add_argument("src", help="checkpoint of pourlit fit (RL, skill or action prior)")
    x.add_argument("dst", help="where to write the copy")
    x.set_defaults(func=_cmd_export)

    rp = sub.add_parser("report", help="learning-curve PNG and markdown report of an RL run")
    rp.add_argument("--run", required=True, help="RL run folder (its CSV logs) or metrics.csv")
    rp.add_argument("--eval", action="append", help="LABEL=eval.json (pourlit evaluate --json)")
    rp.add_argument("--video", help="policy video to link")
    rp.add_argument("--collect-summary", help="summary.json of pourlit collect")
    rp.add_argument("-o", "--output", required=True, help="report path (.md)")
    rp.set_defaults(func=_cmd_report)

    sw = sub.add_parser("sweep", help="method x seed x setting sweep of pourlit fit on Ray Tune")
    sw.add_argument("-c", "--config", required=True, help="sweep YAML (configs/sweeps/*.yaml)")
    sw.add_argument("--resume", action="store_true", help="continue a killed sweep in its folder")
    sw.add_argument(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)"
    )
    sw.add_argument("--out", help="parent folder of the sweep folder (default: the config's out)")
    sw.add_argument("--cpus", type=float, help="CPUs per trial (default: the config's, 1)")
    sw.set_defaults(func=_cmd_sweep)

    s = sub.add_parser("scene", help="write the full scene (liquid included) as MJCF")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--liquid-count", type=int, default=32)
    s.add_argument("--liquid-radius", type=float, default=0.0065)
    s.set_defaults(func=_cmd_scene)
    return p


LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def main(argv: list[str] | None = None) -> int:
    args_given = argv is not None
    argv = sys.argv[1:] if argv is None else argv
    from pourlit.threads import limit_torch_threads

    limit_torch_threads()
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from pourlit.lightning_cli import run

        return run(argv if args_given else None)  # None: LightningCLI reads sys.argv itself
    parser = build_parser()
    args = parser.parse_args(argv)
    from pourlit.errors import debug, error_line, exit_code, reportable

    try:
        return args.func(args)
    except Exception as e:
        if debug() or not reportable(e):
            raise
        print(f"pourlit: error: {error_line(e)}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt:
        print("pourlit: interrupted; files written so far are complete", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
