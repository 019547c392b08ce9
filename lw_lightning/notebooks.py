"""Execute the notebooks of ``notebooks/`` top to bottom: ``python -m lw_lightning.notebooks`` (= ``make notebooks``).

Each notebook has one code cell tagged ``parameters`` (papermill's convention): its assignments are
the defaults a person running it in Jupyter gets. :func:`execute_notebook` inserts a cell tagged
``injected-parameters`` right after it with the values given here, so a test can send the figures
to a temporary folder and ``make notebooks`` to ``docs/figures/``. The kernel is this interpreter
(``sys.executable``), started through a kernel spec written for the run (whatever kernel specs the
user has installed elsewhere), with this checkout first on ``PYTHONPATH`` (also for the repository's
``benchmarks/``, which some notebooks import and which is not installed with the package).

Needs the test requirements (``nbclient``, ``nbformat``, ``ipykernel``).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
#: the notebooks, in the order ``make notebooks`` runs them
NOTEBOOKS = ("lookwhere_where_it_looks", "tokenlearner_video_maps", "efficiency_tradeoffs", "datasets_tour")
KERNEL_NAME = "lw-lightning-python"


class NotebookError(RuntimeError):
    """A notebook failed: the cell's error in one line, and the notebook's name."""


def _nbformat():
    try:
        import nbformat
    except ImportError:  # the runtime requirements do not carry the notebook tooling
        raise NotebookError("executing notebooks needs the test requirements: pip install -r requirements-test.txt") from None
    return nbformat


def notebook_path(name: str) -> Path:
    """``notebooks/<name>.ipynb`` of one of :data:`NOTEBOOKS` (ValueError for another name)."""
    stem = Path(name).stem
    if stem not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {name!r}; choose from {', '.join(NOTEBOOKS)}")
    return NOTEBOOK_DIR / f"{stem}.ipynb"


def parameter_names(source: str) -> set[str]:
    """Names assigned at the top level of a parameters cell's ``source``."""
    names = set()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def inject_parameters(nb: Any, params: Mapping[str, Any]) -> Any:
    """Insert a cell tagged ``injected-parameters`` that assigns ``params`` (as Python literals)
    right after the cell tagged ``parameters``; returns ``nb`` (changed in place).

    Raises ValueError when the notebook has no such cell or a name is not one of its parameters:
    a misspelt parameter would otherwise be ignored without a word."""
    nbformat = _nbformat()
    index = next((i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if index is None:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    known = parameter_names(nb.cells[index].source)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {unknown}; the notebook's are {sorted(known)}")
    if not params:
        return nb
    source = "# injected by lw_lightning.notebooks\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, cell)
    return nb


def _kernel_manager(spec_dir: Path, threads: int | None = 1):
    """A kernel manager whose only kernel spec runs ``sys.executable -m ipykernel_launcher``
    (``threads``: its OpenMP / MKL thread count; None: the libraries' default)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    folder = spec_dir / "kernels" / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    # the notebooks import the lw_lightning of this checkout, also where the venv's editable
    # install points at another one (a git worktree), and its benchmarks/ (not installed)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "lw-lightning",
        "language": "python",
        "env": {"PYTHONPATH": path},
    }
    if threads:
        spec["env"].update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    (folder / "kernel.json").write_text(json.dumps(spec))
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)


class Execution(NamedTuple):
    """An executed notebook, its wall time and the CPU time its kernel used (user + system, all threads)."""

    nb: Any
    seconds: float
    cpu_seconds: float


def _kernel_cpu_seconds(client: Any) -> float:
    try:
        import psutil  # an ipykernel dependency

        times = psutil.Process(client.km.provisioner.process.pid).cpu_times()
        return float(times.user + times.system + times.children_user + times.children_system)
    except Exception:  # no psutil or no local process: the number is informative only
        return float("nan")


def execute_notebook(
    path: str | Path,
    params: Mapping[str, Any] | None = None,
    timeout: int = 600,
    save_to: str | Path | None = None,
    threads: int | None = 1,
) -> Execution:
    """Run the notebook at ``path`` in a fresh kernel (working directory: its folder), with
    ``params`` injected; returns the executed notebook, its wall time and its kernel's CPU time.
    ``save_to``: also write the executed copy there. ``threads``: torch's CPU threads in the kernel
    (default 1: on a 2-core machine shared with other jobs a second OpenMP thread mostly waits for a
    core and multiplies the CPU time, as in ``conf/bench/cpu.yaml``; None: torch's default).
    A failing cell raises :class:`NotebookError` naming the notebook and the error."""
    nbformat = _nbformat()
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    path = Path(path)
    nb = inject_parameters(nbformat.read(path, as_version=4), dict(params or {}))
    with tempfile.TemporaryDirectory(prefix="lw-kernel-") as spec_dir:
        client = NotebookClient(
            nb,
            km=_kernel_manager(Path(spec_dir), threads),
            timeout=timeout,
            kernel_name=KERNEL_NAME,
            resources={"metadata": {"path": str(path.parent)}},
        )
        cpu = {"seconds": float("nan")}

        def after_cell(**_: Any) -> None:  # the kernel is still running here (not after the last cell)
            cpu["seconds"] = _kernel_cpu_seconds(client)

        client.on_cell_executed = after_cell
        start = time.perf_counter()
        try:
            client.execute()
        except CellTimeoutError:
            raise NotebookError(f"{path.name}: a cell ran past the {timeout} s timeout") from None
        except CellExecutionError as err:
            name = getattr(err, "ename", "error")
            raise NotebookError(f"{path.name}: {name}: {getattr(err, 'evalue', str(err).splitlines()[-1])}") from None
        seconds = time.perf_counter() - start
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(save_to))
    return Execution(nb, seconds, cpu["seconds"])


def has_outputs(nb: Any) -> list[int]:
    """Indices of the code cells that carry outputs or an execution count (a committed notebook must have none)."""
    return [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lw_lightning.notebooks", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="*", default=list(NOTEBOOKS), help=f"notebooks to run (default: all of {', '.join(NOTEBOOKS)})"
    )
    parser.add_argument(
        "--figure-dir", default=None, help="where each notebook saves its figure (FIGURE_DIR; default: a temporary folder)"
    )
    parser.add_argument("--executed-dir", default=None, help="also write the executed notebooks (with outputs) here")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one cell may run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in the kernel (0: torch's default)")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="more parameters for every notebook, VALUE a Python literal or a plain string (e.g. DEMO_DIR=../runs)",
    )
    args = parser.parse_args(argv)
    try:
        paths = [notebook_path(n) for n in args.names]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    extra: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --set {item!r}: expected NAME=VALUE", file=sys.stderr)
            return 2
        try:
            extra[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            extra[key] = value
    times = []
    with tempfile.TemporaryDirectory(prefix="lw-notebooks-") as scratch:
        figure_dir = str(Path(args.figure_dir).resolve()) if args.figure_dir else scratch
        for path in paths:
            print(f"running {path.relative_to(ROOT)} ...", flush=True)
            params = {"FIGURE_DIR": figure_dir, **extra}
            save_to = Path(args.executed_dir) / path.name if args.executed_dir else None
            try:
                _, seconds, cpu_seconds = execute_notebook(
                    path, params, timeout=args.timeout, save_to=save_to, threads=args.threads or None
                )
            except (NotebookError, ValueError) as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
            times.append((path.stem, seconds, cpu_seconds))
            print(f"  done in {seconds:.0f} s (kernel CPU {cpu_seconds:.0f} s)", flush=True)
    print(
        "\n".join(
            ["", "notebook run times (wall, kernel CPU):", *(f"  {name:<28} {s:6.0f} s {c:6.0f} s" for name, s, c in times)]
        )
    )
    if args.figure_dir:
        print(f"figures in {args.figure_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
