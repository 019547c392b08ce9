"""`python -m benchmarks.compare_video`: full ViViT vs ViViT + TokenLearner vs video LookWhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import compare_video
from lw_lightning.config import ConfigError, load_config
from lw_lightning.models.video_lookwhere import video_lookwhere_config
from lw_lightning.models.vivit import vivit_config

ROOT = Path(__file__).resolve().parents[1]


def test_stage_recipes_share_data_and_the_finetuning_schedule():
    """Same data everywhere; TokenLearner is fine-tuned with video LookWhere's fine-tuning schedule."""
    cfgs = {
        k: load_config(
            v,
            ["module.model.pretrained=x", "module.teacher.checkpoint=x.ckpt"]
            if k == "distill"
            else (["module.model.pretrained=x"] if k in ("finetune", "tokenlearner") else []),
        )
        for k, v in compare_video.RECIPES.items()
    }
    for k in cfgs:
        assert cfgs[k].data == cfgs["vivit"].data and cfgs[k].seed == cfgs["vivit"].seed, k
    for key in ("lr", "weight_decay", "warmup", "min_lr_ratio", "optimizer"):
        assert cfgs["tokenlearner"].module[key] == cfgs["finetune"].module[key], key
    assert cfgs["tokenlearner"].trainer == cfgs["finetune"].trainer
    lw = video_lookwhere_config(**{k: v for k, v in cfgs["finetune"].module.model.items() if k not in ("arch", "pretrained")})
    vivit = vivit_config(**dict(cfgs["vivit"].module.model.items()))
    assert lw.grid == vivit.grid == (8, 8, 8) and lw.selector_grid == (4, 4, 4) and lw.embed_dim == vivit.embed_dim


def test_tokenlearner_specs_and_bad_arguments(capsys):
    assert compare_video.parse_tl("16:0.5") == (16, 0.5)
    for bad in ("8", "x:0.5", "8:1.0", "0:0.5"):
        with pytest.raises(ConfigError, match="--tokenlearner"):
            compare_video.parse_tl(bad)
    assert compare_video.main(["--ks", "0", "--output-dir", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--ks 0.0" in err
    assert compare_video.pct(0.025) == "2.5%"


def test_token_plans():
    lw = video_lookwhere_config(
        "tiny", num_frames=16, img_size=64, tubelet=[2, 8, 8], selector_num_frames=8, selector_img_size=32
    )
    assert compare_video.token_plan(lw, 51) == "51 ×4 + selector 64 ×2"
    full = vivit_config("tiny", num_frames=16, img_size=64, tubelet=[2, 8, 8])
    assert compare_video.token_plan(full, None) == "512 ×4"
    tl = vivit_config("tiny", num_frames=16, img_size=64, tubelet=[2, 8, 8], num_tokens=8, tokenlearner_loc=1)
    assert compare_video.token_plan(tl, None) == "512 ×1, 64 ×3"


def test_table_has_ratios_against_the_full_vivit_and_the_recall():
    rows = [
        dict(
            method="full ViViT",
            variant="all tubelets",
            token_plan="512 ×4",
            flops=470e6,
            acc1=0.9,
            latency_s=0.1,
            train_s=2.0,
            act_bytes=100 * 2**20,
        ),
        dict(
            method="video LookWhere",
            variant="k=10%",
            token_plan="51 ×4",
            flops=47e6,
            acc1=0.89,
            latency_s=0.05,
            train_s=0.5,
            act_bytes=10 * 2**20,
            object_recall=0.8,
            slice_hit=0.95,
        ),
        dict(
            method="ViViT + TokenLearner",
            variant="8 tokens at 1/2",
            token_plan="512 ×2, 64 ×2",
            flops=250e6,
            acc1=0.85,
            latency_s=0.06,
            train_s=1.0,
            act_bytes=60 * 2**20,
        ),
    ]
    md = compare_video.results_md(rows, 16)
    assert "| video LookWhere | k=10% | 51 ×4 | 0.0235 | 10.0× | 89.0% | 50.0 ms | 2.0× | 32 | 4.0× | 10 MiB | 10.0× |" in md
    assert "video LookWhere k=10% (0.0235 GMACs, 89.0%) → full ViViT all tubelets (0.235 GMACs, 90.0%)." in md
    assert (
        md.splitlines()[0].startswith("| method | variant | tubelet tokens per block | GMACs / clip |")
        and "train clips/s b=16" in md
    )
    assert "| k=10% | 80% | 95% |" in md


@pytest.mark.slow
def test_quick_comparison_end_to_end_and_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = ["--quick", "--no-progress", "--output-dir", str(tmp_path), "--ks", "0.05", "0.1", "--tokenlearner", "8:0.5"]
    assert compare_video.main(args) == 0
    results = json.loads((tmp_path / "compare_video_results.json").read_text())
    names = [r["name"] for r in results["rows"]]
    assert names == [
        "full ViViT all tubelets",
        "video LookWhere k=5%",
        "video LookWhere k=10%",
        "ViViT + TokenLearner 8 tokens at 1/2",
    ]
    full, lw5, lw10, tl = results["rows"]
    assert lw5["flops"] < lw10["flops"] < full["flops"] and tl["flops"] < full["flops"]
    assert all(0.0 <= r["acc1"] <= 1.0 and r["latency_s"] > 0 and r["act_bytes"] > 0 for r in results["rows"])
    for name in ("compare_video.md", "compare_video_accuracy_vs_gmacs.png", "compare_video_selection.png"):
        assert (tmp_path / name).is_file()
    # run again: every stage is reused, nothing trains
    assert compare_video.main(args) == 0
    again = json.loads((tmp_path / "compare_video_results.json").read_text())
    assert all(v == 0.0 for v in again["fit_seconds"].values())
    assert [r["acc1"] for r in again["rows"]] == [r["acc1"] for r in results["rows"]]


def test_seeds_table_sets_finished_runs_side_by_side(tmp_path):
    def write(d, accs):
        d.mkdir()
        rows = [
            {"name": n, "method": m, "variant": v, "flops": f, "acc1": a}
            for (n, m, v, f), a in zip(
                [("full", "full ViViT", "all tubelets", 2 * 247_000_000), ("lw5", "video LookWhere", "k=5%", 2 * 16_300_000)],
                accs,
            )
        ]
        (d / "compare_video_results.json").write_text(json.dumps({"rows": rows}))

    write(tmp_path / "seed_0", [0.99, 0.975])
    write(tmp_path / "seed_1", [0.98, 0.965])
    table = compare_video.seeds_table([tmp_path / "seed_0", tmp_path / "seed_1"])
    lines = table.splitlines()
    assert "seed_0 / seed_1" in lines[0] and len(lines) == 4
    assert "| video LookWhere | k=5% | 0.0163 | 97.5 / 96.5 | 97.0 (96.5–97.5) |" in lines
    assert compare_video.main(["--table", str(tmp_path / "seed_0"), str(tmp_path / "nope")]) == 2
