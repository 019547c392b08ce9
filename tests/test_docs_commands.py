"""The `python -m lw_lightning ...` and `python -m benchmarks ...` commands of the README and docs/
work as written.

Every command (also those for GPUs and clusters) composes a valid config for each of its jobs; the
README's commands are also run, in order, on tiny data in a scratch directory (slow).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from benchmarks import CONFIG_NAME as BENCH_CONFIG
from benchmarks import SCHEMAS as BENCH_SCHEMAS
from benchmarks.__main__ import main as bench_main
from benchmarks.config import parse_bench_config
from lw_lightning.cli import COMMANDS, main
from lw_lightning.config import RUN_CONFIG, compose, expand_sweep, finalize, prepare_overrides

from .conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "examples").iterdir())]


#: ``-m lw_lightning COMMAND`` or ``-m benchmarks`` (the bench command; not ``-m benchmarks.compare``)
_COMMAND = re.compile(r"-m (?:lw_lightning (\w+)\b|(benchmarks)(?=[\s`]|$))(.*)")


def commands(path: Path) -> list[list[str]]:
    """The argument lists after ``-m lw_lightning`` of the CLI commands in a file, and
    ``["benchmarks", ...]`` for ``python -m benchmarks ...`` (continuation lines joined, comments and
    ``"$@"`` dropped)."""
    lines = re.sub(r"\\\n\s*", " ", path.read_text()).splitlines()
    found = []
    for i, line in enumerate(lines):
        match = _COMMAND.search(line.strip().strip("`"))
        command = match and (match.group(1) or match.group(2))
        if command in (*COMMANDS, "benchmarks"):
            rest = match.group(3).split("`")[0].split(" #")[0].replace('"$@"', "")
            if "..." in rest:  # a schematic (`fit experiment=NAME key=value ...`), not a command
                continue
            if not rest.strip():  # `python -m benchmarks` named in a sentence
                continue
            while True:
                try:
                    found.append([command, *shlex.split(rest)])
                    break
                except ValueError:  # a quoted value goes on on the next line
                    i += 1
                    rest += " " + lines[i].strip()
    return found


def all_commands() -> list[tuple[str, list[str]]]:
    return [(p.relative_to(ROOT).as_posix(), c) for p in DOCS for c in commands(p)]


def check_jobs(argv: list[str]) -> int:
    """What the CLI checks before it runs anything: every job's composed, validated config (``--help``:
    the command's help is printed, exit status 0)."""
    if "--help" in argv:
        return int(bench_main(argv[1:]) == 0 if argv[0] == "benchmarks" else main(argv) == 0)
    command, words = argv[0], [w for w in argv[1:] if w not in ("-m", "--multirun")]
    multirun = len(words) != len(argv) - 1
    words = [w for w in words if w not in ("--cfg", "job", "--resolve")]
    bench = command == "benchmarks"
    name = BENCH_CONFIG if bench else RUN_CONFIG
    jobs = expand_sweep(prepare_overrides(words, name, schemas=BENCH_SCHEMAS if bench else None), multirun)
    for job in jobs:
        cfg = finalize(compose(name, job), allow_missing=True, validate_tree=not bench)
        if bench:  # what the bench checks first
            parse_bench_config(OmegaConf.to_container(cfg.bench))
    return len(jobs)


def test_docs_hold_the_commands():
    found = all_commands()
    assert len(found) >= 40
    files = {f for f, _ in found}
    assert {"README.md", "docs/scaling.md", "docs/video.md", "docs/datasets.md", "docs/benchmarks.md"} <= files
    assert any("launch=ddp_gpu" in c for _, c in found) and any("launch=slurm" in c for _, c in found)
    assert sum(c[0] == "benchmarks" for f, c in found if f == "docs/benchmarks.md") >= 5  # the bench command's
    assert not any(c[0] == "bench" for _, c in found)
    assert any("-m" in c for f, c in found if f == "README.md")  # the sweep
    assert not any(w.startswith("--config") or w == "--print-config" for _, c in found for w in c)


@pytest.mark.parametrize("where, argv", all_commands(), ids=lambda a: a if isinstance(a, str) else " ".join(a)[:70])
def test_documented_command_composes(where, argv, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert check_jobs(argv) >= 1


# --------------------------------------------------------------------------------------------
# the README's commands, run
# --------------------------------------------------------------------------------------------

#: files a README command names that an earlier `make demo` would have made: how to make them tiny
PREREQUISITES = {
    "runs/demo_teacher/version_0/checkpoints/last.ckpt": ["fit", "experiment=demo_teacher"],
    "runs/demo_distill/version_0/lookwhere.pt": [
        "fit",
        "experiment=demo_distill",
        "module.teacher.checkpoint=runs/demo_teacher/version_0/checkpoints/last.ckpt",
    ],
}
TINY_SIGNS = ["data.num_train=8", "data.num_val=4", "data.num_test=4", "data.batch_size=4"]
TINY_DATA = {  # per DataModule: a few samples per batch
    "SyntheticSignsDataModule": TINY_SIGNS,
    "TrafficSignsDataModule": ["data.batch_size=2", "data.eval_batch_size=2", "data.num_workers=0"],
    "KineticsDataModule": ["data.batch_size=4", "data.eval_batch_size=2"],
}


def tiny(argv: list[str]) -> list[str]:
    """The command with tiny data and one step: fit trains one batch and writes its run dir and
    last.ckpt (which the next commands evaluate), evaluation reads one batch."""
    command, words = argv[0], argv[1:]
    first_job = expand_sweep(prepare_overrides([w for w in words if "=" in w and not w.startswith("-")]), multirun=True)[0]
    cfg = finalize(compose(RUN_CONFIG, first_job), allow_missing=True, validate_tree=False)
    extra = [
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.precision=32-true",
        *TINY_DATA.get(str(cfg.data._target_).rsplit(".", 1)[-1], []),
    ]
    if command == "fit":
        if not any(w.startswith("trainer.fast_dev_run") for w in words):
            extra += ["trainer.max_steps=1", "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0"]
    else:
        extra.append(f"trainer.limit_{'val' if command == 'validate' else command}_batches=1")
    return [*argv, *extra]


@pytest.mark.slow
def test_readme_commands_run_in_order_on_tiny_data(tmp_path, monkeypatch, capsys):
    """Each README command as written (with /tmp/ moved into the scratch dir), plus tiny data and one
    step; `--make-tiny` commands make the datasets the later ones read."""
    monkeypatch.chdir(tmp_path)
    env_path = f"{ROOT}"
    text = re.sub(r"\\\n\s*", " ", (ROOT / "README.md").read_text()).replace("/tmp/", f"{tmp_path}/")
    ran = []
    for line in text.splitlines():
        line = line.strip()
        maker = re.match(r"python -m (lw_lightning\.data\.\w+) --make-tiny (\S+)$", line)
        if maker:
            subprocess.run(
                [sys.executable, "-m", maker.group(1), "--make-tiny", maker.group(2)],
                cwd=tmp_path,
                check=True,
                env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
                capture_output=True,
                timeout=600,
            )
            continue
        match = re.match(r"python -m lw_lightning (\w+)\b(.*)", line)
        if not match or match.group(1) not in COMMANDS or "launch=slurm" in line or re.search(r"=(DIR|/data/|/path/)", line):
            # slurm cannot be submitted here; a real dataset or weights folder is not on this machine:
            # test_documented_command_composes composes those
            continue
        argv = [match.group(1), *shlex.split(match.group(2).split(" #")[0])]
        if any(needed in line for needed in PREREQUISITES):
            for needed, maker_argv in PREREQUISITES.items():  # in order: the distillation needs the teacher
                if not Path(needed).exists():
                    assert main(tiny([*maker_argv, *TINY_SIGNS])) == 0, capsys.readouterr().err
        code = main(argv if "--cfg" in argv else tiny(argv))
        assert code == 0, (line, capsys.readouterr().err[-2000:])
        ran.append(argv[0])
    assert ran.count("fit") >= 6 and {"validate", "test", "predict"} <= set(ran)
    assert len(list(Path("runs/demo_tokenlearner").glob("version_*/predictions.csv"))) == 1
