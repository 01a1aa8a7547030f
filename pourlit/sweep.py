"""``pourlit sweep -c configs/sweeps/NAME.yaml``: method x seed x setting experiments on Ray Tune.

A sweep names a base ``pourlit fit`` config, a search space over its flags, the metric that
trials report at every validation, and the held-out evaluation each finished trial gets. Every
trial is an ordinary ``pourlit fit`` run with its own run folder (``SWEEP/runs/<trial>``:
logs, last.ckpt, best.ckpt, the config copy, ``eval.json``), so any trial can be inspected,
evaluated or resumed by hand. Ray Tune schedules the trials over the CPUs (and GPUs) of a
local Ray started for the sweep, or of a cluster (``--address`` / ``RAY_ADDRESS``), resumes a
killed sweep (``--resume``: finished trials stay finished, unfinished ones continue from their
own last.ckpt) and can stop hopeless trials early (ASHA on the validation metric).

Sweep config keys (``configs/sweeps/rl_methods.yaml`` is a worked example):

- ``name``: the sweep folder is ``OUT/name`` (``out``, default ``runs/sweeps``).
- ``base``: the default ``pourlit fit`` config (``configs/rl/*.yaml`` or ``configs/skills/*.yaml``).
- ``space``: ``flag: {grid: [...]}`` (every value), ``{choice: [...]}``, ``{uniform: [lo, hi]}``,
  ``{loguniform: [lo, hi]}`` or ``{randint: [lo, hi]}`` (sampled). Flags are LightningCLI keys
  without the dashes (``model.init_args.target_divergence``). Two special keys: ``seed`` (sets
  ``seed_everything`` and, for RL models, ``model.init_args.seed``) and ``setting``, whose grid
  values are named bundles ``{name: ..., config: ..., FLAG: value, ...}`` (a method with its
  own base config and flags).
- ``fixed``: flags every trial gets.
- ``search``: ``grid`` (default; sampled domains drawn ``num_samples`` times per grid point),
  ``random`` (the same generator) or ``optuna`` (needs optuna; sampled domains only).
- ``metric`` / ``mode``: what trials report at every validation (default ``val/success_rate``,
  ``max``); ``scheduler: {asha: {grace_period, reduction_factor, max_t}}`` stops trials early,
  counted in validations.
- ``evaluate``: ``{episodes, seed, ckpt: best|last, mode: sampled|mean}`` on each finished trial
  (``pourlit evaluate``'s defaults: seed 10000, held out from validation's 20000).
- ``resources``: ``{cpu: 1, gpu: 0}`` per trial (fractional GPUs allowed); ``max_concurrent``.

Results in the sweep folder: ``results.md`` / ``results.json`` (mean +- std over seeds per
setting of the held-out evaluation, with failed trials listed) and ``learning_curves.png``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from pourlit.errors import yaml_reason

SWEEP_KEYS = {
    "name", "out", "base", "space", "fixed", "search", "num_samples", "metric", "mode",
    "scheduler", "evaluate", "resources", "max_concurrent",
}  # fmt: skip
DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint")
SEARCHES = ("grid", "random", "optuna")
INSTALL = "pip install 'pourlit[sweep]'  (make setup installs it)"


class SweepConfigError(ValueError):
    """A bad sweep config; the message names the file and the key."""


@dataclass
class SweepSpec:
    """A validated sweep config, paths absolute."""

    path: Path
    name: str
    folder: Path
    base: Path
    space: dict[str, dict]
    fixed: dict[str, Any]
    search: str = "grid"
    num_samples: int = 1
    metric: str = "val/success_rate"
    mode: str = "max"
    scheduler: dict | None = None
    evaluate: dict = field(default_factory=dict)
    resources: dict = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    max_concurrent: int | None = None
    cwd: Path = field(default_factory=Path.cwd)


def load_sweep(path: str | os.PathLike[str], out: str | None = None) -> SweepSpec:
    """Read and check a sweep config (keys, domains, paths); flags are checked by
    :func:`check_flags`."""
    p = Path(path)
    if not p.is_file():
        raise SweepConfigError(f"{p}: sweep config not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SweepConfigError(f"{p}: not valid YAML ({yaml_reason(e)})") from None
    if not isinstance(raw, dict):
        raise SweepConfigError(f"{p}: expected a mapping of sweep keys")
    unknown = sorted(set(raw) - SWEEP_KEYS)
    if unknown:
        raise SweepConfigError(
            f"{p}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(SWEEP_KEYS))}"
        )
    for key in ("name", "base"):
        if not raw.get(key):
            raise SweepConfigError(f"{p}: '{key}' is required")
    space = raw.get("space") or {}
    if not isinstance(space, dict) or not space:
        raise SweepConfigError(f"{p}: 'space' is empty: give at least one flag to vary")
    for key, dom in space.items():
        if not isinstance(dom, dict) or len(dom) != 1 or next(iter(dom)) not in DOMAINS:
            raise SweepConfigError(
                f"{p}: space.{key}: expected one of {{{', '.join(DOMAINS)}: ...}}"
            )
        kind, values = next(iter(dom.items()))
        if not isinstance(values, list) or not values:
            raise SweepConfigError(f"{p}: space.{key}.{kind}: expected a non-empty list")
        if kind in ("uniform", "loguniform", "randint") and len(values) != 2:
            raise SweepConfigError(f"{p}: space.{key}.{kind}: expected [low, high]")
        if key == "setting":
            for v in values:
                if kind != "grid" or not isinstance(v, dict) or "name" not in v:
                    raise SweepConfigError(
                        f"{p}: space.setting: a grid of {{name: ..., FLAG: value}}"
                    )
    search = raw.get("search", "grid")
    if search not in SEARCHES:
        raise SweepConfigError(f"{p}: search must be one of {', '.join(SEARCHES)}, got {search!r}")
    if search == "optuna" and any("grid" in d for d in space.values()):
        raise SweepConfigError(
            f"{p}: search optuna samples; it cannot run a grid (use search: grid)"
        )
    mode = raw.get("mode", "max")
    if mode not in ("max", "min"):
        raise SweepConfigError(f"{p}: mode must be max or min, got {mode!r}")
    sched = raw.get("scheduler")
    if sched is not None and (not isinstance(sched, dict) or set(sched) != {"asha"}):
        raise SweepConfigError(f"{p}: scheduler: expected {{asha: {{...}}}} or nothing")
    ev = {"episodes": 50, "seed": 10_000, "ckpt": "best", "mode": "sampled"}
    ev.update(raw.get("evaluate") or {})
    if set(ev) - {"episodes", "seed", "ckpt", "mode"} or ev["ckpt"] not in ("best", "last"):
        raise SweepConfigError(f"{p}: evaluate: keys episodes, seed, ckpt (best|last), mode")
    res = {"cpu": 1, "gpu": 0, **(raw.get("resources") or {})}
    if set(res) - {"cpu", "gpu"} or res["cpu"] <= 0 or res["gpu"] < 0:
        raise SweepConfigError(f"{p}: resources: cpu > 0 and gpu >= 0 per trial")
    base = _existing(p, raw["base"], "base")
    for v in space.get("setting", {}).get("grid", []):
        if "config" in v:
            _existing(p, v["config"], f"setting {v['name']}: config")
    folder = Path(out or raw.get("out") or "runs/sweeps").resolve() / str(raw["name"])
    return SweepSpec(
        path=p.resolve(), name=str(raw["name"]), folder=folder, base=base, space=space,
        fixed=dict(raw.get("fixed") or {}), search=search,
        num_samples=int(raw.get("num_samples", 1)), metric=str(raw.get("metric", "val/success_rate")),
        mode=mode, scheduler=sched, evaluate=ev, resources=res,
        max_concurrent=raw.get("max_concurrent"),
    )  # fmt: skip


def _existing(sweep: Path, config: str, what: str) -> Path:
    c = Path(config)
    if not c.is_file():
        raise SweepConfigError(f"{sweep}: {what}: {c} does not exist")
    return c.resolve()


# -- a trial: its flags, its name ------------------------------------------------------------------
def trial_flags(spec: SweepSpec, config: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The base config and the ``pourlit fit`` flags of one trial's point in the space:
    ``fixed``, then the setting bundle, then the other space keys; ``seed`` expands."""
    base, flags = spec.base, dict(spec.fixed)
    setting = config.get("setting")
    if isinstance(setting, dict):
        base = Path(setting["config"]).resolve() if "config" in setting else base
        flags |= {k: v for k, v in setting.items() if k not in ("name", "config")}
    flags |= {k: v for k, v in config.items() if k not in ("setting", "seed")}
    if "seed" in config:
        flags["seed_everything"] = config["seed"]
        if "/rl/" in base.as_posix():
            flags["model.init_args.seed"] = config["seed"]
    return base, flags


def trial_name(config: dict[str, Any]) -> str:
    """A readable, stable folder name for a point in the space (``setting``, other keys, seed)."""
    parts = []
    setting = config.get("setting")
    if isinstance(setting, dict):
        parts.append(str(setting["name"]))
    for k in sorted(k for k in config if k not in ("setting", "seed")):
        v = config[k]
        v = f"{v:.4g}" if isinstance(v, float) else str(v)
        parts.append(f"{k.rsplit('.', 1)[-1]}={v}")
    if "seed" in config:
        parts.append(f"seed{config['seed']}")
    name = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", "_".join(parts)) or "trial"
    if len(name) > 100:
        digest = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
        name = f"{name[:80]}_{digest[:10]}"
    return name


def _cli_value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, dict | list | bool) or v is None else str(v)


def _flag_args(flags: dict[str, Any]) -> list[str]:
    return [a for k, v in flags.items() for a in (f"--{k}", _cli_value(v))]


def fit_args(base: Path, flags: dict[str, Any], run: Path) -> list[str]:
    return ["fit", "-c", str(base), "--run_dir", str(run), *_flag_args(flags)]


def check_flags(spec: SweepSpec) -> None:
    """Parse every distinct (base config, flag names) a trial can get with LightningCLI
    (``--print_config``, nothing instantiated): an unknown flag or a bad value fails here,
    before any trial starts, with one line naming the sweep file."""
    from pourlit.lightning_cli import run as main

    samples = []
    settings = spec.space.get("setting", {}).get("grid", [None])
    for setting in settings:
        point: dict[str, Any] = {}
        for k, dom in spec.space.items():
            kind, values = next(iter(dom.items()))
            if k == "setting":
                point[k] = setting
            elif kind in ("grid", "choice"):
                point[k] = values[0]
            elif kind == "randint":
                point[k] = int(values[0])
            else:
                point[k] = float(values[0])
        samples.append(point)
    for point in samples:
        base, flags = trial_flags(spec, point)
        args = ["fit", "-c", str(base), *_flag_args(flags)]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main([*args, "--print_config"])
            except SystemExit as e:
                rc = e.code or 0
        if rc:
            lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("pourlit: error:")]
            why = lines[-1].removeprefix("pourlit: error: ") if lines else f"exit {rc}"
            raise SweepConfigError(f"{spec.path}: trial flags for {base.name}: {why}")


# -- Ray Tune ----------------------------------------------------------------------------------------
class TuneReport(L.Callback):
    """Reports ``metric`` (and env steps, for RL) to Ray Tune after every validation."""

    def __init__(self, metric: str = "val/success_rate") -> None:
        self.metric = metric

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        from ray import tune

        out = {self.metric: float(trainer.callback_metrics[self.metric])}
        out["env_steps"] = float(getattr(pl_module, "env_steps", trainer.global_step))
        tune.report(out)


def _domain(kind: str, values: list) -> Any:
    from ray import tune

    if kind == "grid":
        return tune.grid_search(values)
    if kind == "choice":
        return tune.choice(values)
    if kind == "uniform":
        return tune.uniform(*values)
    if kind == "loguniform":
        return tune.loguniform(*values)
    return tune.randint(*values)


def run_trial(config: dict[str, Any], spec: SweepSpec) -> None:
    """One trial: ``pourlit fit`` into its own run folder (continuing from its last.ckpt when
    one is there), then the held-out evaluation, reported to Tune as ``test/...``."""
    from ray import tune

    from pourlit.evaluate import evaluate
    from pourlit.lightning_cli import run as main
    from pourlit.threads import limit_torch_threads

    limit_torch_threads()  # each trial: 1 torch thread unless POURLIT_TORCH_THREADS says more
    os.chdir(spec.cwd)  # the configs' relative paths are relative to where the sweep started
    run = spec.folder / "runs" / trial_name(config)
    done = run / "eval.json"
    if not done.is_file():
        base, flags = trial_flags(spec, config)
        args = fit_args(base, flags, run) + ["--trainer.enable_progress_bar", "false"]
        report = {"class_path": "pourlit.sweep.TuneReport", "init_args": {"metric": spec.metric}}
        args += ["--trainer.callbacks+", json.dumps(report)]
        if (run / "checkpoints/last.ckpt").is_file():
            args += ["--ckpt_path", "last"]
        t0 = time.perf_counter()
        rc = main(args)
        if rc:
            raise RuntimeError(f"pourlit fit exited {rc}; its run folder: {run}")
        ev = spec.evaluate
        ckpt = run / "checkpoints" / f"{ev['ckpt']}.ckpt"
        if not ckpt.is_file():
            ckpt = run / "checkpoints/last.ckpt"
        res = evaluate(
            ckpt,
            episodes=int(ev["episodes"]),
            seed=int(ev["seed"]),
            progress=False,
            mode=ev["mode"],
        )
        res |= {"ckpt": str(ckpt), "wall_minutes": round((time.perf_counter() - t0) / 60, 2)}
        done.write_text(json.dumps(res, indent=2) + "\n")
    res = json.loads(done.read_text())
    final = {f"test/{k}": float(v) for k, v in res.items() if isinstance(v, int | float)}
    final[spec.metric] = _last_value(run, spec.metric)  # Tune wants its metric in every result
    tune.report({**final, "run_dir": str(run)})


def _last_value(run: Path, metric: str) -> float:
    """The last logged value of ``metric`` in a run's CSV logs (NaN if none)."""
    from pourlit.report import read_curves

    try:
        points = read_curves(run).get(metric, [])
    except (OSError, ValueError):
        points = []
    return float(points[-1][1]) if points else float("nan")


def run_sweep(spec: SweepSpec, resume: bool = False, address: str | None = None) -> Path:
    """Run (or resume) the sweep on Ray Tune, then write its results; returns results.md."""
    check_flags(spec)  # a bad flag fails here, Ray installed or not
    try:
        import ray
        from ray import tune
    except ImportError:
        raise SweepConfigError(f"Ray Tune is not installed: {INSTALL}") from None
    from ray.tune.search import BasicVariantGenerator

    exists = spec.folder.is_dir() and tune.Tuner.can_restore(str(spec.folder))
    if exists and not resume:
        raise SweepConfigError(f"{spec.folder}: sweep folder exists; --resume continues it")
    if resume and not exists:
        raise SweepConfigError(f"{spec.folder}: no sweep to resume there")
    address = address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    res = dict(spec.resources)
    trainable = tune.with_resources(tune.with_parameters(run_trial, spec=spec), res)
    if resume:
        tuner = tune.Tuner.restore(
            str(spec.folder), trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        searcher: Any = BasicVariantGenerator(max_concurrent=spec.max_concurrent or 0)
        if spec.search == "optuna":
            try:
                from ray.tune.search.optuna import OptunaSearch
            except ImportError:
                raise SweepConfigError("search optuna needs optuna: pip install optuna") from None
            searcher = OptunaSearch()
        scheduler = None
        if spec.scheduler:
            from ray.tune.schedulers import ASHAScheduler

            scheduler = ASHAScheduler(time_attr="training_iteration", **spec.scheduler["asha"])
        space = {k: _domain(*next(iter(d.items()))) for k, d in spec.space.items()}
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
                search_alg=searcher, scheduler=scheduler,
                trial_dirname_creator=lambda t: trial_name(t.config),
                max_concurrent_trials=spec.max_concurrent,
            ),
            run_config=tune.RunConfig(
                name=spec.name, storage_path=str(spec.folder.parent), verbose=1,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )  # fmt: skip
    grid = tuner.fit()
    trials = []
    for r in grid:
        cfg = r.config or {}  # empty for a trial an interrupted sweep never started
        trials.append(
            {
                "trial": trial_name(cfg) if cfg else "(not started)",
                "setting": _setting_label(cfg, spec) if cfg else "(not started)",
                "seed": cfg.get("seed"),
                "metrics": {k: v for k, v in (r.metrics or {}).items() if k.startswith("test/")},
                "error": None if r.error is None else str(r.error).splitlines()[0][:300],
            }
        )
    return write_results(spec, trials)


def _setting_label(config: dict[str, Any], spec: SweepSpec) -> str:
    """What a trial's seeds are averaged over: its point in the space without the seed."""
    c = {k: v for k, v in config.items() if k != "seed"}
    return trial_name(c) if c else spec.base.stem


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} +- {sd:.2f}"


def unfinished(trials: list[dict]) -> list[dict]:
    """Trials without an error and without a held-out evaluation: not started, or stopped
    mid-way by an interrupted sweep (``--resume`` continues them)."""
    return [t for t in trials if not t["error"] and "test/success_rate" not in t["metrics"]]


def write_results(spec: SweepSpec, trials: list[dict]) -> Path:
    """results.json (every trial), results.md (mean +- std over seeds per setting of the
    held-out evaluation; failed trials listed, unfinished ones counted) and
    learning_curves.png in the sweep folder."""
    from pourlit.report import plot_curves

    folder = spec.folder
    (folder / "results.json").write_text(json.dumps(trials, indent=2) + "\n")
    ev = spec.evaluate
    rows = [
        "| setting | seeds | success rate | poured fraction | return | minutes/run | failed "
        "| unfinished |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting in sorted({t["setting"] for t in trials}):
        ts = [t for t in trials if t["setting"] == setting]
        ok = [t["metrics"] for t in ts if not t["error"] and "test/success_rate" in t["metrics"]]

        def col(key: str, ok: list = ok) -> str:
            return _mean_sd([m[key] for m in ok if key in m and not math.isnan(m[key])])

        rows.append(
            f"| {setting} | {len(ok)} | {col('test/success_rate')} | "
            f"{col('test/mean_poured_fraction')} | {col('test/mean_return')} | "
            f"{col('test/wall_minutes')} | {sum(bool(t['error']) for t in ts)} | "
            f"{len(unfinished(ts))} |"
        )
    failed = [t for t in trials if t["error"]]
    head = (
        f"Sweep `{spec.path.name}`: {len(trials)} trials, each evaluated on {ev['episodes']} "
        f"held-out episodes (seed {ev['seed']}, {ev['ckpt']}.ckpt, {ev['mode']} policy); "
        "mean +- std over the seeds that finished."
    )
    if unfinished(trials):
        head += f" {len(unfinished(trials))} trials unfinished: `--resume` continues them."
    lines = [head, "", *rows]
    if failed:
        lines += ["", "Failed trials:", *(f"- {t['trial']}: {t['error']}" for t in failed)]
    out = folder / "results.md"
    out.write_text("\n".join(lines) + "\n")
    runs = {t["trial"]: folder / "runs" / t["trial"] for t in trials}
    runs = {k: v for k, v in runs.items() if any(v.glob("logs/*/metrics.csv"))}
    if runs:
        plot_curves(runs, folder / "learning_curves.png", f"sweep {spec.name}")
    return out
