"""notebooks/: committed without outputs, in sync with their jupytext sources, package API only, and
executed top to bottom (slow: ``make notebooks`` / ``pytest -m notebooks``)."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from lw_lightning.notebooks import NOTEBOOK_DIR, NOTEBOOKS, execute_notebook, has_outputs, inject_parameters, notebook_path

FIGURES = {
    "lookwhere_where_it_looks": ["nb_lookwhere_where_it_looks.png"],
    "tokenlearner_video_maps": ["nb_tokenlearner_video_maps.png", "nb_tokenlearner_video_maps.gif"],
    "efficiency_tradeoffs": ["nb_efficiency_tradeoffs.png"],
    "datasets_tour": ["nb_datasets_tour.png"],
}
#: seconds a cell may run: generous, the suite shares 2 cores with other jobs
CELL_TIMEOUT = 1800


def read(name: str):
    return nbformat.read(notebook_path(name), as_version=4)


def test_every_notebook_is_committed_and_listed():
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)
    assert set(FIGURES) == set(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs(name):
    nb = read(name)
    assert has_outputs(nb) == [], f"{name}.ipynb: clear the outputs before committing (jupytext --to ipynb {name}.py)"
    nbformat.validate(nb)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_matches_its_jupytext_source(name):
    jupytext = pytest.importorskip("jupytext")
    source = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    nb = read(name)
    assert [(c.cell_type, c.source) for c in nb.cells] == [(c.cell_type, c.source) for c in source.cells], (
        f"notebooks/{name}.ipynb differs from {name}.py: regenerate it with `jupytext --to ipynb notebooks/{name}.py`"
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_uses_the_package_api_only(name):
    nb = read(name)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "sys.path" not in code
    modules = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            modules.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
    assert "tests" not in modules and "lw_lightning" in modules
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "FIGURE_DIR = None" in params[0].source


def test_parameters_are_injected_after_the_parameters_cell():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("A = 1\nB: str = 'x'  # comment", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(A)"),
    ]
    inject_parameters(nb, {"A": 2, "B": "/tmp/x"})
    assert nb.cells[1].metadata["tags"] == ["injected-parameters"]
    assert "A = 2\n" in nb.cells[1].source and "B = '/tmp/x'\n" in nb.cells[1].source
    with pytest.raises(ValueError, match=r"unknown notebook parameter\(s\) \['C'\]"):
        inject_parameters(nb, {"C": 1})
    with pytest.raises(ValueError, match="unknown notebook"):
        notebook_path("nope")


def test_runner_names_a_failing_cell(tmp_path):
    path = tmp_path / "broken.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("X = 1", metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell("1 / 0")]
    nbformat.write(nb, str(path))
    from lw_lightning.notebooks import NotebookError

    with pytest.raises(NotebookError, match="broken.ipynb: ZeroDivisionError"):
        execute_notebook(path, {"X": 2}, timeout=120)
    nb.cells[1].source = "Y = X * 2"
    nbformat.write(nb, str(path))
    done = execute_notebook(path, {"X": 2}, timeout=120)
    assert done.seconds > 0 and done.cpu_seconds > 0 and has_outputs(done.nb) == [0, 1, 2]  # executed: counts set


def test_kernel_imports_the_checkouts_benchmarks(tmp_path):
    """benchmarks/ is the repository's, not installed with lw_lightning: the notebooks that import it
    find it through the kernel's PYTHONPATH (the checkout first), wherever the notebook lies."""
    importing = [n for n in NOTEBOOKS if "from benchmarks." in "".join(c.source for c in read(n).cells)]
    assert sorted(importing) == ["efficiency_tradeoffs", "lookwhere_where_it_looks"]
    path = tmp_path / "imports.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("ROOT = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import benchmarks.config, lw_lightning\n"
            "from pathlib import Path\n"
            "assert Path(benchmarks.__file__).parent == Path(ROOT) / 'benchmarks', benchmarks.__file__\n"
            "assert Path(lw_lightning.__file__).parent == Path(ROOT) / 'lw_lightning', lw_lightning.__file__"
        ),
    ]
    nbformat.write(nb, str(path))
    execute_notebook(path, {"ROOT": str(NOTEBOOK_DIR.parent)}, timeout=120)  # raises NotebookError on a failed cell


def _run(name: str, tmp_path: Path, **params) -> dict[str, Path]:
    figures = tmp_path / "figures"
    nb, seconds, cpu_seconds = execute_notebook(notebook_path(name), {"FIGURE_DIR": str(figures), **params}, timeout=CELL_TIMEOUT)
    print(f"{name}: {seconds:.0f} s wall, kernel CPU {cpu_seconds:.0f} s")
    out = {f: figures / f for f in FIGURES[name]}
    for path in out.values():
        assert path.is_file() and path.stat().st_size > 10_000, path
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    return out


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, tmp_path):
    work = tmp_path / "work"
    params = {} if name == "efficiency_tradeoffs" else {"WORK_DIR": str(work)}
    _run(name, tmp_path, **params)


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.parametrize("size", [224, 994])
def test_lookwhere_notebook_reads_a_demo_dir_and_official_weights(tmp_path, size):
    import torch

    from lw_lightning import demo
    from lw_lightning.models.checkpoint import save_official
    from lw_lightning.models.config import model_config
    from lw_lightning.models.lookwhere import LookWhere

    runs = tmp_path / "demo"
    assert demo.main(["--quick", "--no-progress", "--output-dir", str(runs), "--set", "trainer.enable_model_summary=false"]) == 0
    torch.manual_seed(0)
    weights = save_official(LookWhere(model_config("tiny", img_size=[224, 224])), tmp_path / "lookwhere_tiny.pt")
    _run(
        "lookwhere_where_it_looks",
        tmp_path,
        DEMO_DIR=str(runs),
        LOOKWHERE_WEIGHTS=str(weights),
        LOOKWHERE_MODEL="lookwhere_tiny_patch14_224",
        LOOKWHERE_SIZE=size,  # 994: r and the resize mode come from the file (the Python API failed there)
        KS=[13, 51, 256],
    )


@pytest.mark.slow
@pytest.mark.notebooks
def test_efficiency_notebook_reads_bench_results(tmp_path, root):
    from benchmarks.__main__ import main

    out = tmp_path / "bench"
    assert main(["bench=smoke", f"output_dir={out}", "bench.suites=[images,video]"]) == 0
    _run("efficiency_tradeoffs", tmp_path, BENCH_RESULTS=str(out / "results.json"))


@pytest.mark.slow
@pytest.mark.notebooks
def test_video_notebook_reads_a_checkpoint(tmp_path):
    from lw_lightning.config import load_config
    from lw_lightning.data.synthetic_kinetics import SyntheticKineticsSpec, make_synthetic_kinetics
    from lw_lightning.tasks import run

    data = tmp_path / "kinetics"
    make_synthetic_kinetics(data, SyntheticKineticsSpec(train_per_class=4, val_per_class=2, test_per_class=2))
    fit = run(
        load_config(
            "demo_video",
            [f"data.root={data}", f"output_dir={tmp_path / 'runs'}", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"],
        ),
        "fit",
    )
    _run(
        "tokenlearner_video_maps",
        tmp_path,
        CHECKPOINT=fit.trainer.checkpoint_callback.last_model_path,
        DATA_DIR=str(data),
        WORK_DIR=str(tmp_path / "work"),
    )
