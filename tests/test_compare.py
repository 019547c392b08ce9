"""`python -m benchmarks.compare`: full-res ViT vs LookWhere vs TokenLearner-ViT on the demo task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from benchmarks import compare, report
from lw_lightning.config import load_config
from lw_lightning.models.config import model_config
from lw_lightning.plots import accuracy_figure, plot_accuracy


def _recipe(root, name, *overrides):
    return load_config(root / "conf/experiment" / name, list(overrides))


def test_tokenlearner_recipe_has_the_finetuning_data_and_schedule(root):
    """The comparison's "same data and schedule" starts here: with a default demo nothing is carried."""
    tl = _recipe(root, "demo_tokenlearner.yaml", "module.model.pretrained=t.ckpt")
    ft = _recipe(root, "demo_finetune.yaml", "module.model.pretrained=l.pt")
    for key in ("seed", "data", "trainer", "callbacks", "module.lr", "module.weight_decay", "module.warmup"):
        assert OmegaConf.select(tl, key) == OmegaConf.select(ft, key), key
    assert compare.carried_overrides(ft, tl) == []
    assert tl.module.model.arch == "tokenlearner" and tl.module.model.tokenlearner_tokens == 8
    # the tiny preset's 4 blocks: positions 0, 1/4, 1/2, 3/4 are blocks 0..3
    blocks = [
        model_config("tiny", arch="tokenlearner", tokenlearner_loc=loc).tokenlearner_block() for loc in (0.0, 0.25, 0.5, 0.75)
    ]
    assert blocks == [0, 1, 2, 3]


def test_carried_overrides_copy_what_the_demo_changed(root):
    ft = _recipe(
        root,
        "demo_finetune.yaml",
        "module.model.pretrained=l.pt",
        "seed=3",
        "data.num_train=32",
        "data.batch_size=16",
        "trainer.max_epochs=1",
        "module.lr=0.0005",
    )
    tl = _recipe(root, "demo_tokenlearner.yaml", "module.model.pretrained=t.ckpt")
    carried = compare.carried_overrides(ft, tl)
    assert sorted(carried) == sorted(
        ["seed=3", "data.num_train=32", "data.batch_size=16", "trainer.max_epochs=1", "module.lr=0.0005"]
    )
    again = _recipe(root, "demo_tokenlearner.yaml", "module.model.pretrained=t.ckpt", *carried)
    assert compare.carried_overrides(ft, again) == []


def test_a_finished_run_of_the_same_config_is_reused(root, tmp_path):
    from lw_lightning.config import to_yaml

    cfg = _recipe(root, "demo_tokenlearner.yaml", "module.model.pretrained=t.ckpt", f"output_dir={tmp_path}", "name=tl")
    assert compare.finished_run(cfg) is None
    run = tmp_path / "tl" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(to_yaml(cfg))
    assert compare.finished_run(cfg) is None  # started, not finished
    (run / "checkpoints" / "epoch_003.ckpt").write_bytes(b"")
    (run / "summary_fit.json").write_text(json.dumps({"best_model_path": str(run / "checkpoints" / "epoch_003.ckpt")}))
    assert compare.finished_run(cfg) == (run / "checkpoints" / "epoch_003.ckpt", run / "config.yaml")
    # a progress bar setting does not matter; the schedule, data and model do
    assert (
        compare.finished_run(
            _recipe(
                root,
                "demo_tokenlearner.yaml",
                "module.model.pretrained=t.ckpt",
                f"output_dir={tmp_path}",
                "name=tl",
                "trainer.enable_progress_bar=false",
            )
        )
        is not None
    )
    for change in ("module.lr=0.002", "data.num_train=32", "module.model.tokenlearner_loc=0.25", "trainer.max_epochs=3"):
        other = _recipe(
            root, "demo_tokenlearner.yaml", "module.model.pretrained=t.ckpt", f"output_dir={tmp_path}", "name=tl", change
        )
        assert compare.finished_run(other) is None, change


def test_token_plan_and_loc_names():
    n = 256
    assert compare.token_plan(model_config("tiny", arch="vit"), None) == f"{n} ×4"
    assert compare.token_plan(model_config("tiny", arch="lookwhere"), 13) == "13 ×4 + selector 16 ×2"
    assert compare.token_plan(model_config("tiny", arch="tokenlearner", tokenlearner_loc=0.25), None) == f"{n} ×1, 8 ×3"
    assert compare.token_plan(model_config("tiny", arch="tokenlearner", tokenlearner_loc=0.0), None) == "8 ×4"
    assert [compare.loc_name(x) for x in (0.0, 0.25, 0.5, 0.75)] == ["0", "1/4", "1/2", "3/4"]


def _row(method, variant, flops, acc, k=None, note=None, **extra):
    return dict(
        method=method,
        variant=variant,
        label=method,
        model=method,
        k=k,
        tokens=k or 256,
        note=note,
        flops=flops,
        acc1=acc,
        token_plan="-",
        **extra,
    )


def test_pareto_front_and_table():
    rows = [
        _row("full-res ViT", "all", 364e6, 0.68, latency_s=0.02, train_s=1.0, act_bytes=100 * 2**20),
        _row("LookWhere", "k=13", 30e6, 0.64, k=13, latency_s=0.01, train_s=0.2, act_bytes=10 * 2**20),
        _row("LookWhere", "k=25", 43e6, 0.67, k=25, latency_s=0.01, train_s=0.25, act_bytes=20 * 2**20),
        _row("TokenLearner-ViT", "8 tokens at 0", 44e6, 0.50, note="at 0", latency_s=0.01, train_s=0.2, act_bytes=20 * 2**20),
        _row(
            "TokenLearner-ViT", "8 tokens at 3/4", 290e6, 0.70, note="at 3/4", latency_s=0.02, train_s=0.8, act_bytes=80 * 2**20
        ),
    ]
    front = report.pareto_front(rows)
    assert [(r["method"], r["variant"]) for r in front] == [
        ("LookWhere", "k=13"),
        ("LookWhere", "k=25"),
        ("TokenLearner-ViT", "8 tokens at 3/4"),
    ]
    md = report.compare_md(rows, 1, 32)
    lines = md.splitlines()
    assert lines[0].startswith("| method | variant | patch tokens per block | GMACs |") and "train img/s b=32" in lines[0]
    body = [ln for ln in lines[2:] if ln.startswith("| ")]
    assert len(body) == 5
    assert body[1].split(" | ")[4] == "12.1×"  # FLOP ratio of k=13
    assert body[1].split(" | ")[-1].rstrip(" |") == "10.0×"  # activation ratio
    assert "TokenLearner-ViT 8 tokens at 3/4 (0.145 GMACs, 70.0%)." in md


def test_accuracy_plot_draws_noted_rows_as_a_line(tmp_path):
    rows = [
        _row("full-res ViT", "all", 364e6, 0.68),
        _row("LookWhere", "k=13", 30e6, 0.64, k=13),
        _row("LookWhere", "k=25", 43e6, 0.67, k=25),
        _row("TokenLearner-ViT", "at 0", 44e6, 0.50, note="at 0"),
        _row("TokenLearner-ViT", "at 1/4", 120e6, 0.60, note="at 1/4"),
    ]
    fig = accuracy_figure(rows, chance=0.25)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert lines["full-res ViT"].get_linestyle() == "None" and lines["full-res ViT"].get_marker() == "*"
    assert lines["TokenLearner-ViT"].get_linestyle() == "-" and len(lines["TokenLearner-ViT"].get_xdata()) == 2
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"k=13", "k=25", "at 0", "at 1/4"} <= texts
    assert plot_accuracy(rows, tmp_path / "p.png").stat().st_size > 1000


def _fake_demo(tmp_path, teacher_arch="vit", summary="{}"):
    """A demo dir with the layout `make demo` leaves (empty checkpoint files: only paths are read)."""
    demo = tmp_path / "demo"
    for name, arch in (("demo_teacher", teacher_arch), ("demo_finetune", "lookwhere")):
        run = demo / name / "version_0"
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "epoch_005.ckpt").write_bytes(b"")
        (run / "config.yaml").write_text(OmegaConf.to_yaml({"module": {"model": {"arch": arch}}, "data": {"num_test": 400}}))
        (run / "summary_fit.json").write_text(json.dumps({"best_model_path": str(run / "checkpoints" / "epoch_005.ckpt")}))
    (demo / "demo_summary.json").write_text(summary)
    return demo


def test_demo_dir_is_found_from_the_run_layout(tmp_path):
    runs = compare.find_demo_runs(_fake_demo(tmp_path))
    assert runs.teacher_ckpt.name == "epoch_005.ckpt" and runs.teacher_ckpt.parts[-4] == "demo_teacher"
    assert runs.finetune_config.parent.parent.name == "demo_finetune"
    moved = tmp_path / "moved"
    (tmp_path / "demo").rename(moved)  # summary_fit.json still names the old absolute paths
    assert compare.find_demo_runs(moved).teacher_ckpt == moved / "demo_teacher/version_0/checkpoints/epoch_005.ckpt"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: tmp / "nope", "--demo-dir {tmp}/nope: no such directory"),
        (lambda tmp: tmp, "--demo-dir {tmp} is not a finished demo: no demo_summary.json"),
        (lambda tmp: _fake_demo(tmp, summary="{"), "demo_summary.json is not JSON"),
        (lambda tmp: _fake_demo(tmp, teacher_arch="lookwhere"), "trains module.model.arch=lookwhere, expected vit"),
        (
            lambda tmp: _fake_demo(tmp, summary=json.dumps({"checkpoints": {"teacher": str(tmp / "gone.ckpt")}})),
            "the demo_teacher checkpoint {tmp}/gone.ckpt is missing",
        ),
    ],
    ids=["missing", "no-summary", "bad-json", "wrong-arch", "recorded-ckpt-gone"],
)
def test_bad_demo_dir_is_one_error_line(tmp_path, capsys, make, message):
    demo = make(tmp_path)
    out = tmp_path / "out"
    assert compare.main(["--demo-dir", str(demo), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message.format(tmp=tmp_path) in err
    assert not out.exists()  # nothing trained, nothing written


def test_bad_insertion_point_is_one_error_line(tmp_path, capsys):
    assert (
        compare.main(["--demo-dir", str(_fake_demo(tmp_path)), "--output-dir", str(tmp_path / "o"), "--locs", "0.5", "1.0"]) == 2
    )
    err = capsys.readouterr().err
    assert err == "error: --locs 1.0: an insertion point is a fraction of the depth in [0, 1)\n"


@pytest.mark.slow
def test_quick_comparison_writes_table_plot_and_results(tmp_path, root, monkeypatch, capsys):
    """The whole command on a few samples: demo stages, 4 TokenLearner fine-tunings, evaluation, timing."""
    monkeypatch.chdir(root)
    out = tmp_path / "cmp"
    assert (
        compare.main(["--quick", "--no-progress", "--output-dir", str(out), "--set", "trainer.enable_model_summary=false"]) == 0
    )
    results = json.loads((out / "compare_results.json").read_text())
    rows = results["rows"]
    assert [(r["method"], r["variant"]) for r in rows] == [
        ("full-res ViT", "all 256 patches"),
        ("LookWhere", "k=13 (5%)"),
        ("LookWhere", "k=25 (10%)"),
        ("LookWhere", "k=51 (20%)"),
        *[("TokenLearner-ViT", f"8 tokens at {p}") for p in ("0", "1/4", "1/2", "3/4")],
    ]
    # the re-evaluation reproduces the demo's own test numbers
    demo = json.loads((out / "demo_summary.json").read_text())
    assert [r["acc1"] for r in rows[:4]] == pytest.approx([r["acc1"] for r in demo["rows"]])
    assert all(r["samples"] == 16 and r["split"] == "test" for r in rows)
    full, tl = rows[0], rows[4:]
    assert [r["flops"] for r in tl] == sorted(r["flops"] for r in tl) and tl[-1]["flops"] < full["flops"]
    assert all(r["latency_s"] > 0 and r["train_s"] > 0 and r["act_bytes"] > 0 for r in rows)
    assert tl[0]["act_bytes"] < tl[-1]["act_bytes"] < full["act_bytes"]
    # each TokenLearner run trained on the demo's (quick) data, from the teacher
    for r in tl:
        cfg = OmegaConf.load(Path(r["ckpt"]).parent.parent / "config.yaml")
        assert cfg.data.num_train == 32 and cfg.trainer.max_epochs == 1
        assert cfg.module.model.pretrained == demo["checkpoints"]["teacher"]
    md = (out / "compare.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert len(table) == 1 + 8 and "Best accuracy at each GMACs budget" in md
    assert results["command"].startswith("python -m benchmarks.compare --quick")
    assert (out / "compare_accuracy_vs_gmacs.png").stat().st_size > 1000
