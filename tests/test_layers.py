"""Dependencies point one way: the CLI/config layer above modules, modules above data and models,
callbacks reading module hooks instead of importing modules; the product (``lw_lightning``) stands
alone, the repository's ``benchmarks/`` importing it and never the reverse."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from types import SimpleNamespace

import pytorch_lightning as pl
from PIL import Image

from lw_lightning.callbacks.images import SelectionImages
from lw_lightning.callbacks.perf import FlopsPerSample

from .conftest import ROOT


def _imported_after(modules: list[str]) -> set[str]:
    """The lw_lightning modules loaded by importing ``modules`` in a fresh interpreter."""
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(' '.join(sorted(k for k in sys.modules if k.startswith('lw_lightning'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_callbacks_do_not_import_modules_and_data_does_not_import_the_cli_config():
    loaded = _imported_after(
        [
            "lw_lightning.callbacks.images",
            "lw_lightning.callbacks.perf",
            "lw_lightning.data.imagenet",
            "lw_lightning.data.ade20k",
            "lw_lightning.data.traffic_signs",
            "lw_lightning.data.synthetic_signs",
        ]
    )
    assert "lw_lightning.data.imagenet" in loaded and "lw_lightning.errors" in loaded
    assert not {m for m in loaded if m.startswith("lw_lightning.modules")}, loaded
    assert "lw_lightning.config" not in loaded and "lw_lightning.cli" not in loaded


class _Hooked(pl.LightningModule):
    def flops_per_sample(self) -> int:
        return 3_000_000_000

    def example_images(self, batch, ncols: int = 4) -> dict[str, Image.Image]:
        return {"images/custom": Image.new("RGB", (ncols, 2))}


def test_callbacks_read_the_module_hooks_and_skip_modules_without_them():
    assert list(SelectionImages(ncols=3).pictures(_Hooked(), {})) == ["images/custom"]
    assert SelectionImages(ncols=3).pictures(_Hooked(), {})["images/custom"].size == (3, 2)  # ncols reaches the hook
    assert SelectionImages().pictures(pl.LightningModule(), {}) == {}

    logged: list[dict] = []
    logger = SimpleNamespace(log_metrics=lambda metrics, step: logged.append({**metrics, "step": step}))
    trainer = SimpleNamespace(is_global_zero=True, fast_dev_run=False, loggers=[logger])
    FlopsPerSample().on_fit_start(trainer, _Hooked())  # type: ignore[arg-type]
    assert logged == [{"perf/gflops_per_sample": 3.0, "step": 0}]
    plain = FlopsPerSample()
    plain.on_fit_start(trainer, pl.LightningModule())  # type: ignore[arg-type]
    assert plain.flops is None and len(logged) == 1


#: a dotted name in the benchmarks package: "benchmarks.config.BenchConfig", "benchmarks.compare"
_BENCHMARKS_NAME = re.compile(r"(?<![\w.])benchmarks\.\w")


def _is_benchmarks(module: str | None) -> bool:
    return module is not None and (module == "benchmarks" or module.startswith("benchmarks."))


def _benchmarks_imports(tree: ast.AST) -> list[str]:
    """Every import of ``benchmarks`` in a module: ``import``/``from`` statements at any depth (also
    inside functions and ``if TYPE_CHECKING``), and ``importlib.import_module``/``__import__`` of a
    literal name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if _is_benchmarks(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_benchmarks(node.module):
            found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("import_module", "__import__") and _is_benchmarks(str(node.args[0].value)):
                found.append(f"line {node.lineno}: {name}({node.args[0].value!r})")
    return found


def _table_strings(tree: ast.Module) -> list[str]:
    """The strings held by the module-level assignments of a module (its tables and constants)."""
    values = [n.value for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign)) and n.value is not None]
    return [c.value for v in values for c in ast.walk(v) if isinstance(c, ast.Constant) and isinstance(c.value, str)]


def test_lw_lightning_imports_nothing_from_benchmarks():
    """The product stands alone: no module of lw_lightning imports the repository's benchmarks (not
    even lazily), and no table of it names one of their modules or classes (as a schema or a
    _target_ would, to be imported later)."""
    files = sorted((ROOT / "lw_lightning").rglob("*.py"))
    assert len(files) > 40 and ROOT / "lw_lightning" / "cli.py" in files
    imports, names = {}, {}
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(ROOT).as_posix()
        if found := _benchmarks_imports(tree):
            imports[where] = found
        if found := [s for s in _table_strings(tree) if _BENCHMARKS_NAME.search(s)]:
            names[where] = found
    assert imports == {}, f"lw_lightning imports benchmarks: {imports}"
    assert names == {}, f"lw_lightning's tables name benchmarks modules: {names}"


def test_the_check_sees_every_kind_of_benchmarks_import():
    code = (
        "import benchmarks\n"
        "def f():\n    from benchmarks.config import BenchConfig\n"
        "def g():\n    import benchmarks.common as c\n    return importlib.import_module('benchmarks.report')\n"
        "from . import bench\nfrom lw_lightning import benchmarks_like\n"
    )
    assert len(_benchmarks_imports(ast.parse(code))) == 4
    tables = _table_strings(ast.parse('SCHEMAS = {"bench": "benchmarks.config.BenchConfig"}\nDOC = "x"\n'))
    assert [s for s in tables if _BENCHMARKS_NAME.search(s)] == ["benchmarks.config.BenchConfig"]
    assert not _BENCHMARKS_NAME.search("python -m benchmarks bench=cpu") and not _BENCHMARKS_NAME.search("lw.benchmarks.x")


def test_running_the_cli_loads_no_benchmarks_module():
    """Also at run time: checking a fit config and answering the old bench command load nothing of
    benchmarks (whose package is importable here, from the checkout)."""
    code = (
        "import sys; from lw_lightning.cli import main\n"
        "codes = [main(['fit', 'experiment=demo_vit', '--cfg', 'job']), main(['bench', 'bench=cpu'])]\n"
        "print(codes, sorted(m for m in sys.modules if m.split('.')[0] == 'benchmarks'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "[0, 2] []", proc.stdout[-500:]
    assert "python -m benchmarks bench=cpu" in proc.stderr
