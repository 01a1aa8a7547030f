"""``pourlit fit|validate|test``: LightningCLI over pourlit's LightningModules and data modules.

The model and data classes come from the config's ``class_path`` (subclass mode). The data
module's state/action sizes and environment config are linked into the model, so a config
never repeats them: ``data.state_dim -> model.init_args.state_dim`` and so on.

An RL config (``pourlit.rl.SACModule``) has no ``data:`` section: the module makes
its own loaders. jsonargparse links cannot be made conditional, so ``run`` picks one of two
CLIs by whether the arguments give a data module (a ``data`` key in a ``-c/--config`` file or a
``--data...`` flag): ``PourlitCLI`` (data required, linked into the model) or ``PourlitRLCLI``
(no data module, no links).

Both add ``--run_dir DIR``: one flag that puts a whole run under DIR (``trainer.default_root_dir``,
every logger's ``save_dir``, every ModelCheckpoint's ``dirpath`` = DIR/checkpoints, and so the
config copy too), whatever folders the config names.

Errors in what the user gave (an unknown or invalid option, a missing or malformed data file, an
unwritable run folder, a full disk) end the command with one line ``pourlit: error: ...`` and
exit status 2 (1 for a full disk); ``POURLIT_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from pourlit.checkpoints import save_atomic
from pourlit.errors import debug, error_line, exit_code, reportable, yaml_reason


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint writes that never leave a partial file: the checkpoint is serialised in
    memory, written to a hidden temporary file beside its target, fsynced and renamed over it.
    A failed write (a full disk) removes the temporary file, keeps the previous file of that
    name intact and raises an OSError naming the checkpoint's path."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        save_atomic(checkpoint, path)

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        """Torch's load, with a file that is not a checkpoint (``--ckpt_path``) named."""
        if not Path(path).is_file():
            raise FileNotFoundError(errno.ENOENT, "checkpoint not found", str(path))
        try:
            return super().load_checkpoint(path, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - torch/pickle raise many kinds for a bad file
            raise ValueError(f"{path}: not a Lightning checkpoint ({type(e).__name__})") from e


class _RunDirCLI(LightningCLI):
    """LightningCLI with ``--run_dir`` (see the module docstring)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--run_dir",
            type=str | None,
            default=None,
            help="put the whole run (logs, every checkpoint, the config copy) under this folder",
        )

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads ``--ckpt_path``'s hyperparameters first: a file that is not a
        checkpoint is one line naming it, not torch's traceback."""
        try:
            super()._parse_ckpt_path()
        except Exception as e:
            if reportable(e):
                raise
            path = self.config[self.config.subcommand].get("ckpt_path")
            raise ValueError(f"{path}: not a Lightning checkpoint ({type(e).__name__})") from e

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        strategy = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # not one the user chose
            strategy.checkpoint_io = AtomicCheckpointIO()

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        run_dir = cfg.get("run_dir")
        if run_dir:
            move_run(cfg, run_dir)
        _check_writable(cfg.trainer.get("default_root_dir") or ".")


class PourlitCLI(_RunDirCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        for name in ("state_dim", "action_dim", "env_config"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.link_arguments("data.init_args.horizon", "model.init_args.horizon")


class PourlitRLCLI(_RunDirCLI):
    """LightningCLI for models without a data module (the RL stage): nothing is linked."""


def _as_list(value: Any) -> list:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


def move_run(cfg: Any, run_dir: str) -> None:
    """Point a parsed config's run outputs at ``run_dir``: ``trainer.default_root_dir``, each
    logger's ``save_dir`` and each ModelCheckpoint's ``dirpath`` (``run_dir/checkpoints``)."""
    cfg.trainer.default_root_dir = str(run_dir)
    for logger in _as_list(cfg.trainer.get("logger")):
        if getattr(logger, "init_args", None) is not None and "save_dir" in logger.init_args:
            logger.init_args.save_dir = str(run_dir)
    for cb in _as_list(cfg.trainer.get("callbacks")):
        if str(getattr(cb, "class_path", "")).endswith("ModelCheckpoint"):
            cb.init_args.dirpath = str(Path(run_dir) / "checkpoints")


def _check_writable(folder: str) -> None:
    """Fail before any work if the run folder cannot be created or written."""
    p = Path(folder)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(p)) from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "run folder is not writable", str(p))


def _config_paths(args: list[str]) -> list[str]:
    paths = []
    for i, a in enumerate(args):
        if a in ("-c", "--config") and i + 1 < len(args):
            paths.append(args[i + 1])
        elif a.startswith("--config="):
            paths.append(a.split("=", 1)[1])
    return paths


def _gives_data(args: list[str]) -> bool:
    """Whether ``args`` configure a data module (see the module docstring)."""
    from pathlib import Path

    import yaml

    if any(a == "--data" or a.startswith(("--data.", "--data=")) for a in args):
        return True
    for path in _config_paths(args):
        p = Path(path)
        if not p.is_file():
            return True  # let LightningCLI report the bad path
        try:
            cfg = yaml.safe_load(p.read_text())
        except yaml.YAMLError:
            return True  # ... or the bad YAML
        if not isinstance(cfg, dict) or cfg.get("data") is not None:
            return True
    return not _config_paths(args)  # no config at all: the skills CLI (its --help)


def _check_configs(args: list[str]) -> None:
    """A ``-c`` file that is not valid YAML: one line naming the file and the position
    (jsonargparse's own message names neither)."""
    import yaml

    for path in _config_paths(args):
        p = Path(path)
        if p.is_file():
            try:
                yaml.safe_load(p.read_text())
            except yaml.YAMLError as e:
                raise ValueError(f"{p}: not valid YAML ({yaml_reason(e)})") from None


def run(args: list[str] | None) -> int:
    """Run LightningCLI with ``args`` (e.g. ``["fit", "-c", "configs/skills/spirl_cl.yaml"]``;
    None reads ``sys.argv``). Returns the exit status: 0, or 2 after printing a one-line error
    (``pourlit.errors``) for a failure in what the user gave."""
    argv = list(sys.argv[1:] if args is None else args)
    kwargs: dict[str, Any] = {
        "subclass_mode_model": True,
        "args": args,
        "save_config_kwargs": {"overwrite": True},
        "parser_kwargs": {"exit_on_error": debug()},
    }
    try:
        _check_configs(argv)
        if _gives_data(argv):
            PourlitCLI(L.LightningModule, L.LightningDataModule, subclass_mode_data=True, **kwargs)
        else:
            PourlitRLCLI(L.LightningModule, None, **kwargs)
    except Exception as e:
        if debug() or not reportable(e):
            raise
        print(f"pourlit: error: {error_line(e)}", file=sys.stderr)
        return exit_code(e)
    return 0
