"""Mixed precision: bf16-mixed on CPU for every task (loss close to fp32 on a fixed batch, a short
run through the CLI), fp32 islands (TokenLearner pooling, teacher attention target, selector map)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from benchmarks.precision import TASKS, compare
from lw_lightning.cli import main
from lw_lightning.models.teacher import TeacherConfig, attention_target, build_teacher
from lw_lightning.models.tokenlearner import TokenLearnerV10, TokenLearnerV11

from .conftest import ROOT, tiny_overrides


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_bf16_mixed_losses_close_to_fp32_for_every_task():
    table = compare("cpu", ("32-true", "bf16-mixed"))
    assert set(table) == set(TASKS)
    for task, losses in table.items():
        fp32, bf16 = losses["32-true"], losses["bf16-mixed"]
        assert math.isfinite(fp32) and math.isfinite(bf16), (task, losses)  # loss and every gradient finite
        assert bf16 == pytest.approx(fp32, rel=2e-2), (task, losses)


@pytest.mark.parametrize("cls", [TokenLearnerV10, TokenLearnerV11])
def test_tokenlearner_pools_in_fp32_under_autocast(cls):
    torch.manual_seed(0)
    tl = cls(16, 4)
    x = torch.randn(2, 196, 16) * 1000  # v1.0 sums ~196 sigmoid-weighted tokens: past fp16's 65504
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tl(x, (14, 14))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, tl(x, (14, 14)), rtol=2e-2, atol=1e-2 * float(out.abs().max()))


def test_teacher_runs_without_grad_and_attention_target_stays_fp32_under_autocast():
    torch.manual_seed(1)
    teacher = build_teacher(TeacherConfig(name=None, preset="tiny", img_size=[56, 56]))
    images = torch.randn(2, 3, 56, 56, requires_grad=True)
    seen = []
    teacher.vit.blocks[0].attn.qkv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = teacher(images)
        block = teacher.vit.blocks[-1]
        x = torch.randn(2, teacher.num_prefix + 16, teacher.embed_dim)
        attn = attention_target(block, x, teacher.num_prefix)
    assert not any(v.requires_grad for v in out.values())  # no graph through the teacher
    assert seen == [torch.bfloat16]  # its matmuls ran in low precision
    assert attn.dtype == torch.float32 and out["attn"].dtype == torch.float32


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory) -> Path:
    from lw_lightning.data.synthetic_kinetics import SyntheticKineticsSpec, make_synthetic_kinetics

    root = tmp_path_factory.mktemp("sk") / "synthetic_kinetics"
    make_synthetic_kinetics(root, SyntheticKineticsSpec(train_per_class=2, val_per_class=1, test_per_class=1, num_frames=16))
    return root


@pytest.mark.parametrize("task", TASKS)
def test_bf16_mixed_fast_dev_run_via_cli(task, tmp_path, kinetics, capsys):
    precision = ["trainer.precision=bf16-mixed", "trainer.fast_dev_run=true"]
    if task == "video":
        args = [
            "experiment=demo_video",
            f"data.root={kinetics}",
            f"output_dir={tmp_path}",
            "data.batch_size=4",
            "trainer.enable_progress_bar=false",
            f"trainer.default_root_dir={tmp_path}",
        ]
    elif task == "distill":
        args = [
            "experiment=demo_distill",
            *tiny_overrides(tmp_path, "lookwhere"),
            "module.teacher.checkpoint=null",
            "module.teacher.preset=tiny",
            "module.teacher.img_size=[112,112]",
            "module.k_min=4",
            "module.k_max=16",
            "module.val_k=8",
        ]
    elif task == "segmentation":
        args = ["experiment=demo_seg", *tiny_overrides(tmp_path, "lookwhere"), "module.train_k=16", "module.eval_k=16"]
    else:
        args = ["experiment=demo_vit", *tiny_overrides(tmp_path, "lookwhere"), "module.eval_k=8"]
    assert main(["fit", *args, *precision]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("fit done:"))
    values = [float(part.split("=")[1]) for part in line.split("[")[0].split()[2:]]
    assert values and all(math.isfinite(v) for v in values), line
