"""Command line: ``python -m lw_lightning {fit,validate,test,predict} experiment=NAME [key=value ...]``.

Hydra is the config layer: the words after the command are Hydra's (overrides, ``--cfg job``,
``-m`` sweeps, ``--help``). Before Hydra runs, the overrides of every job are checked
(:mod:`lw_lightning.config`) without importing torch or Lightning, so a mistake is one line on
stderr with exit status 2 within a couple of seconds. Tests call :func:`main` in-process with an
argv list.

Exit status: 2 for user mistakes (unknown key, wrong type, missing file, unresolvable
interpolation, a broken dataset file, also when a DataLoader worker raised them); 3 for a training
run stopped by a non-finite loss; 1 for a checkpoint that could not be written (a full disk: one
line, the earlier checkpoints intact); 143 for SIGTERM (``fit`` finishes the current batch, writes
``last.ckpt``, ``ckpt_path=last`` resumes from it; validate/test/predict stop too). SIGINT (Ctrl-C)
is left to Lightning: status 1, no new checkpoint. In a sweep the status is the first failing
job's (the other jobs still run). Under DDP only global rank 0 prints.

:func:`run_command` runs another Hydra-configured command the same way (its own primary config, job
function and top-level schemas, all given by the caller): the repository's ``python -m benchmarks``
is one; the package knows nothing of it but the one line that ``python -m lw_lightning bench``
answers with (:data:`MOVED`).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import (
    CONF_DIR,
    RUN_CONFIG,
    ConfigError,
    check_writable_dir,
    compose,
    expand_sweep,
    finalize,
    prepare_overrides,
    suggest,
)

COMMANDS = ("fit", "validate", "test", "predict")

#: commands that left the package: (what to type instead, its schematic arguments); the words typed
#: after the old command go after the new one
MOVED = {"bench": ("python -m benchmarks", "bench=NAME [key=value ...]")}

USAGE = """usage: python -m lw_lightning {fit,validate,test,predict} experiment=NAME [key=value ...] [--cfg job [--resolve]] [-m]

examples:
  python -m lw_lightning fit experiment=demo_vit trainer.max_epochs=2
  python -m lw_lightning test experiment=demo_vit ckpt_path=last
  python -m lw_lightning predict experiment=demo_vit ckpt_path=runs/demo_vit/version_3/checkpoints/last.ckpt
  python -m lw_lightning fit experiment=demo_vit --cfg job --resolve       # print the config
  python -m lw_lightning fit -m experiment=demo_finetune module.train_k=13,25,51 module.model.pretrained=...
  python -m lw_lightning fit -m experiment=lookwhere_in1k_224_k128 launch=slurm trainer.num_nodes=2

ckpt_path=last is the newest <output_dir>/<name>/version_*/checkpoints/last.ckpt of the recipe
(fit resumes it; validate/test/predict evaluate it and log into that version_N folder).
`python -m lw_lightning fit --help` lists the config groups and their options.
The benchmarks are the repository's: `python -m benchmarks bench=NAME`, from a checkout's root.
"""

# torch re-raises an error from a DataLoader worker as the same type, with the message
# "Caught <Type> in DataLoader worker process <n>.\nOriginal Traceback ...": the worker's whole traceback
_WORKER_ERROR = re.compile(r"Caught (\w+) in DataLoader worker process \d+\.\nOriginal Traceback")

#: set by a sweep job before Lightning starts its DDP processes: the job's own overrides, so that a
#: process started with the sweep's command line runs that one job (see :func:`_ddp_child_argv`)
JOB_OVERRIDES_ENV = "LW_LIGHTNING_JOB_OVERRIDES"


def one_line(err: BaseException) -> str:
    """The error's own message on one line; for an error re-raised from a DataLoader worker, the
    original message (the last line of the worker's traceback) instead of the traceback."""
    text = str(err)
    wrapped = _WORKER_ERROR.match(text)
    if wrapped:
        # the traceback ends with '<module>.<Type>: <message>' (after any chained causes)
        lines = re.findall(rf"^(?:[\w.]+\.)?{re.escape(wrapped.group(1))}: (.*)$", text, re.M)
        if lines:
            text = lines[-1]
    text = text.strip()
    return text.splitlines()[0] if text else type(err).__name__


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def legacy_command(command: str, args: Sequence[str], prog: str = "python -m lw_lightning") -> str | None:
    """The new form of a pre-Hydra command line (``--config FILE``, ``--print-config``), or None
    (``prog``: the program; ``command``: its command word, none when empty)."""
    words = _hydra_words(args)
    return None if words is None else " ".join([prog, *([command] if command else []), *words])


def _hydra_words(args: Sequence[str]) -> list[str] | None:
    """The words of a pre-Hydra command line in Hydra's form, or None when it is not one."""
    if not any(
        a in ("--config", "--print-config")
        or a.startswith("--config=")
        or (a == "-c" and i + 1 < len(args) and args[i + 1].endswith((".yaml", ".yml")))
        for i, a in enumerate(args)
    ):
        return None
    new: list[str] = []
    words = list(args)
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("--config", "-c") or word.startswith("--config="):
            path = word.split("=", 1)[1] if "=" in word else (words[i + 1] if i + 1 < len(words) else "")
            i += 1 if "=" in word else 2
            p = Path(path)
            group = p.parent.name
            if group in ("experiment", "launch", "bench", "data") and p.suffix in (".yaml", ".yml"):
                new.append(f"{group}={p.stem}")
            else:
                new.append(
                    f"--config-dir DIR experiment={p.stem}  (with the recipe as DIR/experiment/{p.name}, '# @package _global_' on top)"
                )
            continue
        new.append("--cfg job --resolve" if word == "--print-config" else word)
        i += 1
    return new


def moved_command(command: str, args: Sequence[str]) -> str:
    """What to type for a command of :data:`MOVED`, with the words typed after it (a pre-Hydra
    command line in Hydra's form)."""
    prog, schematic = MOVED[command]
    words = _hydra_words(args)
    tail = " ".join(words) if words is not None else shlex.join(args) if args else schematic
    return f"{prog} {tail}"


def _ddp_child_argv(args: list[str]) -> list[str]:
    """A DDP process that Lightning started for one job of a local sweep re-runs the sweep's
    command line with ``hydra.run.dir=...`` appended: run that one job instead (its overrides come
    from the environment of the job's first process)."""
    job = os.environ.get(JOB_OVERRIDES_ENV)
    if job is None or "LOCAL_RANK" not in os.environ or not any(a in ("-m", "--multirun") for a in args):
        return args
    import json

    tail = [a for a in args if a.startswith(("hydra.run.dir=", "hydra.job.name=", "hydra.output_subdir="))]
    return [*json.loads(job), *tail]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], _ddp_child_argv(argv[1:])
    if command in MOVED:
        return _error(
            f"'{command}' is not a command of lw_lightning any more (the benchmarks are the repository's, "
            f"not the package's); from the repository root run: {moved_command(command, rest)}"
        )
    if command not in COMMANDS:
        return _error(f"unknown command '{command}'{suggest(command, COMMANDS)}: one of {', '.join(COMMANDS)}")
    new = legacy_command(command, rest)
    if new is not None:
        return _error(f"--config/--print-config are gone (configs are Hydra groups now); run: {new}")

    parsed = _parse_hydra_args(rest)
    if isinstance(parsed, int):
        return parsed
    parser, args = parsed
    evaluation = command in ("validate", "test", "predict")
    return _check_and_run(
        args,
        parser,
        RUN_CONFIG,
        None,
        lambda cfg: run_job(command, cfg),
        "lw_lightning",
        lambda composed, allow_missing: finalize(composed, allow_missing=allow_missing, evaluation=evaluation),
    )


def _parse_hydra_args(words: Sequence[str]) -> tuple[Any, Any] | int:
    """(Hydra's argument parser, the parsed words), or the exit status when argparse rejected them
    (it has printed its usage error)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    try:
        return parser, parser.parse_args(list(words))
    except SystemExit as exc:
        return int(exc.code or 0)


def run_command(
    argv: Sequence[str],
    *,
    prog: str,
    config_name: str,
    job: Callable[[Any, list[str]], object],
    schemas: Mapping[str, str] | None = None,
    usage: str = "",
) -> int:
    """Run a Hydra-configured command that is not one of this package's, the way :func:`main` runs
    fit: ``<prog> [key=value ...] [--cfg job [--resolve]] [-m] [--help]``; returns the exit status.

    ``argv``: the words after ``prog`` (the program as a user types it, for messages);
    ``config_name``: the command's primary config in ``conf/`` (``--config-dir DIR`` adds a search
    dir); ``job(cfg, argv)``: runs one job, ``cfg`` composed and resolved (its return value is not
    used); ``schemas``: its top-level keys typed by a dataclass, ``{key: "package.module.Class"}``,
    read from source (:func:`lw_lightning.config.accepted_keys`): the only keys an override may add
    at the top level; ``usage``: printed for an empty command line.

    As for fit, every job's overrides are checked and composed before Hydra runs (group options,
    keys, "did you mean", mandatory values, interpolations, a writable ``output_dir``), and a mistake,
    also a :class:`ConfigError` that ``job`` raises, is one line on stderr and exit status 2; a
    pre-Hydra ``--config FILE`` names the command to type. The tree is not validated against
    ``_target_`` signatures (the job checks its own nodes). In a sweep the status is the first
    failing job's."""
    argv = list(argv)
    if not argv:
        print(usage or f"usage: {prog} [key=value ...]\n", end="")
        return 2
    new = legacy_command("", argv, prog)
    if new is not None:
        return _error(f"--config/--print-config are gone (configs are Hydra groups now); run: {new}")
    parsed = _parse_hydra_args(argv)
    if isinstance(parsed, int):
        return parsed
    parser, args = parsed

    def run_one(cfg: Any) -> int:
        try:
            job(finalize(cfg, validate_tree=False), argv)
        except ConfigError as err:
            return _error(one_line(err))
        return 0

    return _check_and_run(
        args,
        parser,
        config_name,
        dict(schemas or {}),
        run_one,
        getattr(job, "__module__", "").partition(".")[0] or "app",
        lambda composed, allow_missing: finalize(composed, allow_missing=allow_missing, validate_tree=False),
    )


def _check_and_run(
    args: Any,
    parser: Any,
    config_name: str,
    schemas: Mapping[str, str] | None,
    run_one: Callable[[Any], int],
    job_name: str,
    check: Callable[[Any, bool], Any],
) -> int:
    """Check every job of the parsed command line (``check(composed cfg, allow_missing)``: finalize
    it), then hand it to Hydra, which calls ``run_one(cfg)`` per job; the exit status."""
    dirs = [CONF_DIR, *([Path(args.config_dir)] if args.config_dir else [])]
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return _run_hydra(args, parser, config_name, [], run_one, job_name)
    try:
        prepared = prepare_overrides(args.overrides, config_name, dirs, schemas)
        # every job of a sweep is composed and checked before the first one starts
        for job in expand_sweep(prepared, args.multirun):
            cfg = check(compose(config_name, job, dirs), args.cfg is not None)
            if args.cfg is None and cfg.get("output_dir"):
                check_writable_dir(cfg.output_dir, "output_dir")
    except ConfigError as err:
        return _error(one_line(err))
    args.overrides = prepared
    if args.cfg is None and not args.multirun and not any(o.startswith("hydra.output_subdir=") for o in prepared):
        args.overrides.append("hydra.output_subdir=null")  # a single run's record is its run dir's config.yaml
    statuses: list[int] = []
    _run_hydra(args, parser, config_name, statuses, run_one, job_name)
    return next((s for s in statuses if s != 0), 0)


def _run_hydra(
    args: Any, parser: Any, config_name: str, statuses: list[int], run_one: Callable[[Any], int], job_name: str
) -> int:
    """Hand the parsed command line to Hydra; each job's exit status is appended to ``statuses``."""
    from hydra._internal.utils import _run_hydra as run_hydra

    def task(cfg: Any) -> None:
        statuses.append(run_one(cfg))

    task.__module__ = job_name  # Hydra names the job after the task's module: hydra.job.name
    try:
        run_hydra(args=args, args_parser=parser, task_function=task, config_path=str(CONF_DIR), config_name=config_name)
    except SystemExit as exc:  # --help, or a Hydra error it already printed
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        statuses.append(code)
        return code
    return 0


def run_job(command: str, cfg: Any) -> int:
    """One job of fit/validate/test/predict: finalize the composed config, run the command, print
    its summary; the exit status."""
    evaluation = command in ("validate", "test", "predict")
    try:
        cfg = finalize(cfg, evaluation=evaluation)
    except ConfigError as err:
        return _error(one_line(err))
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from .callbacks.nonfinite import NonFiniteLossError
    from .callbacks.sigterm import SIGTERM_EXIT_STATUS, StoppedBySignal
    from .errors import CheckpointSaveError
    from .tasks import run  # heavy imports only when running

    cfg = _sweep_job_run_dir(cfg)
    try:
        result = run(cfg, command)
    except ConfigError as err:
        if getattr(rank_zero_only, "rank", 0) == 0:
            print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except CheckpointSaveError as err:
        if getattr(rank_zero_only, "rank", 0) == 0:
            print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    except NonFiniteLossError as err:
        if getattr(rank_zero_only, "rank", 0) == 0:  # every rank raises it together: report once
            print(f"error: {one_line(err)}", file=sys.stderr)
        return 3
    except StoppedBySignal as stop:
        if getattr(rank_zero_only, "rank", 0) == 0:
            print(str(stop), file=sys.stderr, flush=True)
        return SIGTERM_EXIT_STATUS
    finally:
        os.environ.pop(JOB_OVERRIDES_ENV, None)
    if result.extras.get("note"):  # e.g. resuming a run that already reached its limits
        if result.trainer.is_global_zero:
            print(f"{command}: {result.extras['note']}")
        return 0
    if result.trainer.is_global_zero:
        shown = "  ".join(
            f"{k}={v:.4f}" for k, v in sorted(result.metrics.items()) if not k.startswith("train/") or command == "fit"
        )
        where = f"  [run dir: {result.log_dir}]" if result.log_dir else ""
        if result.extras.get("written"):  # predict: the files it wrote, in place of metrics it has none of
            shown = f"wrote {result.extras['written']}" + (f"  {shown}" if shown else "")
        print(f"{command} done: {shown or 'no metrics'}{where}")
    return 0


def _sweep_job_run_dir(cfg: Any) -> Any:
    """In a sweep, each job's run dir is Hydra's job dir (``<sweep dir>/<job number>``, where
    Hydra keeps its ``.hydra/`` record): the logger logs there unless ``logger.version`` is set.
    The job's overrides go to the environment, for the DDP processes Lightning may start."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return cfg
    import json

    hydra_cfg = HydraConfig.get()
    job = list(hydra_cfg.overrides.task)
    logger = cfg.get("logger")
    if logger and logger.get("version") is None and "save_dir" in logger:
        base = Path(str(logger.save_dir)) / str(logger.get("name") or "")
        version = os.path.relpath(hydra_cfg.runtime.output_dir, base)
        cfg = cfg.copy()
        OmegaConf.update(cfg, "logger.version", version, force_add=True)
        job.append(f"++logger.version={version}")
    os.environ[JOB_OVERRIDES_ENV] = json.dumps(job)
    return cfg
