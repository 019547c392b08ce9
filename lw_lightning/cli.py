"""Command line: ``python -m lw_lightning {fit,validate,test,predict,bench} --config FILE [key=value ...]``.

Tests call :func:`main` in-process with an argv list. User mistakes (unknown key, wrong type,
missing file, unresolvable interpolation, a broken dataset file) print one line on stderr and
return exit status 2, also when a DataLoader worker raised them; a training run stopped by a
non-finite loss prints one line and returns 3. Under DDP only global rank 0 prints (errors and
the final one-line summary).

SIGTERM (``kill PID``, a scheduler's pre-emption notice): ``fit`` finishes the current batch,
writes ``last.ckpt`` (``ckpt_path=last`` resumes from it), prints one line and returns 143
(128 + 15, the shell's status for SIGTERM); validate/test/predict stop with 143 too. SIGINT
(Ctrl-C) is left to Lightning: it tears the run down and exits with status 1, without a new
checkpoint (the step checkpoints in ``last.ckpt`` stay).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from .config import ConfigError, load_config, to_yaml

COMMANDS = ("fit", "validate", "test", "predict", "bench")

EPILOG = """examples:
  python -m lw_lightning fit --config conf/experiment/demo_vit.yaml trainer.max_epochs=2
  python -m lw_lightning test --config conf/experiment/demo_vit.yaml ckpt_path=last
  python -m lw_lightning predict --config conf/experiment/demo_vit.yaml ckpt_path=runs/demo_vit/version_3/checkpoints/last.ckpt
  python -m lw_lightning fit --config conf/experiment/demo_vit.yaml --print-config
  python -m lw_lightning bench --config conf/bench/cpu.yaml output_dir=runs/bench/cpu

ckpt_path=last is the newest <output_dir>/<name>/version_*/checkpoints/last.ckpt of the recipe
(fit resumes it; validate/test/predict evaluate it and log into that version_N folder).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lw_lightning",
        description="Train and evaluate adaptive-computation vision transformers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=COMMANDS, help="what to run")
    parser.add_argument("--config", "-c", action="append", default=[], metavar="FILE", help="YAML config (repeatable; later files win)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, applied last")
    return parser


# torch re-raises an error from a DataLoader worker as the same type, with the message
# "Caught <Type> in DataLoader worker process <n>.\nOriginal Traceback ...": the worker's whole traceback
_WORKER_ERROR = re.compile(r"Caught (\w+) in DataLoader worker process \d+\.\nOriginal Traceback")


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_intermixed_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return int(exc.code or 0)
    try:
        evaluation = args.command in ("validate", "test", "predict")
        cfg = load_config(args.config, args.overrides, allow_missing=args.print_config, evaluation=evaluation)
    except ConfigError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    if args.command == "bench":
        from .bench import run_bench

        try:
            run_bench(cfg, argv)
        except ConfigError as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
            return 2
        return 0
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from .callbacks.nonfinite import NonFiniteLossError
    from .callbacks.sigterm import SIGTERM_EXIT_STATUS, StoppedBySignal
    from .tasks import run  # heavy imports only when running

    try:
        result = run(cfg, args.command)
    except ConfigError as err:
        if getattr(rank_zero_only, "rank", 0) == 0:
            print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        if getattr(rank_zero_only, "rank", 0) == 0:  # every rank raises it together: report once
            print(f"error: {one_line(err)}", file=sys.stderr)
        return 3
    except StoppedBySignal as stop:
        if getattr(rank_zero_only, "rank", 0) == 0:
            print(str(stop), file=sys.stderr, flush=True)
        return SIGTERM_EXIT_STATUS
    if result.extras.get("note"):  # e.g. resuming a run that already reached its limits
        if result.trainer.is_global_zero:
            print(f"{args.command}: {result.extras['note']}")
        return 0
    if result.trainer.is_global_zero:
        shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items()) if not k.startswith("train/") or args.command == "fit")
        where = f"  [run dir: {result.log_dir}]" if result.log_dir else ""
        print(f"{args.command} done: {shown or 'no metrics'}{where}")
    return 0
