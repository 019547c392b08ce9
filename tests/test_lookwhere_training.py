"""LookWhere training (issue 3): teacher targets, losses, checkpoints, distillation, fine-tuning."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from lw_lightning.cli import main
from lw_lightning.models.checkpoint import export_official, init_from_teacher, load_official, save_official
from lw_lightning.models.config import model_config
from lw_lightning.models.distill_losses import cls_loss, map_loss, patch_loss
from lw_lightning.models.lookwhere import LookWhere
from lw_lightning.models.teacher import Teacher, TeacherConfig, attention_target, build_teacher
from lw_lightning.models.vit import gather_tokens
from lw_lightning.modules.distill import LookWhereDistill
from lw_lightning.modules.segmentation import Segmenter

from .conftest import tiny_overrides

TINY = dict(img_size=[112, 112], selector_img_size=56)


def tiny_lookwhere(**kw) -> LookWhere:
    torch.manual_seed(0)
    return LookWhere(model_config("tiny", **{**TINY, **kw}))


def tiny_teacher(query: str = "patch") -> Teacher:
    torch.manual_seed(1)
    return build_teacher(TeacherConfig(name=None, preset="tiny", img_size=[112, 112], attn_query=query))


# ---------------------------------------------------------------------------- losses


def test_losses_match_hand_computation():
    torch.manual_seed(0)
    a, b = torch.randn(3, 8), torch.randn(3, 8)
    assert math.isclose(cls_loss(a, b).item(), sum(((a[i] - b[i]) ** 2).sum().item() / 8 for i in range(3)) / 3, rel_tol=1e-5)
    u, z = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    hand = sum(((u[i, j] - z[i, j]) ** 2).sum().item() / 4 for i in range(2) for j in range(5)) / 10
    assert math.isclose(patch_loss(u, z).item(), hand, rel_tol=1e-5)
    s, t = torch.randn(2, 6), torch.randn(2, 6)
    kl = 0.0
    for i in range(2):
        p = [math.exp(v) for v in t[i].tolist()]
        q = [math.exp(v) for v in s[i].tolist()]
        p = [v / sum(p) for v in p]
        q = [v / sum(q) for v in q]
        kl += sum(pj * (math.log(pj) - math.log(qj)) for pj, qj in zip(p, q))
    assert math.isclose(map_loss(s, t).item(), kl / 2, rel_tol=1e-5)
    assert map_loss(t, t).abs().item() < 1e-6  # KL(p || p) = 0


# ---------------------------------------------------------------------------- teacher


@pytest.mark.parametrize("query", ["patch", "cls"])
def test_attention_target_equals_explicit_average_of_full_logits(query):
    teacher = tiny_teacher(query)
    vit = teacher.vit
    x = torch.randn(2, 5 + 64, 96)
    blk = vit.blocks[-1]
    h = blk.norm1(x)
    qkv = blk.attn.qkv(h).reshape(2, 69, 3, blk.attn.num_heads, blk.attn.head_dim).permute(2, 0, 3, 1, 4)
    logits = (qkv[0] @ qkv[1].transpose(-2, -1)) * blk.attn.scale  # (B, H, T, T): the full matrix
    rows = logits[:, :, 5:] if query == "patch" else logits[:, :, :1]
    explicit = rows.mean(2).mean(1)[:, 5:]
    torch.testing.assert_close(attention_target(blk, x, 5, query), explicit, rtol=1e-5, atol=1e-5)


def test_teacher_tokens_match_timm_forward_features():
    teacher = tiny_teacher()
    images = torch.randn(2, 3, 112, 112)
    out = teacher(images)
    ref = teacher.vit.forward_features(images)  # timm's own path at the native size
    torch.testing.assert_close(out["cls"], ref[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["patch"], ref[:, 5:], rtol=1e-5, atol=1e-5)
    assert out["attn"].shape == (2, 64)
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.vit.training  # stays in eval mode


# ---------------------------------------------------------------------------- checkpoints


def test_official_layout_round_trip(tmp_path):
    model = tiny_lookwhere().eval()
    state = export_official(model)
    assert set(state) == {"selector", "extractor", "resize_mode"} and set(state["selector"]) == {"backbone", "head"}
    assert state["resize_mode"] == "pretraining"  # the mode the selector ran in: fine-tuning keeps it
    assert set(state["selector"]["head"]) == {"w1.weight", "w1.bias", "w2.weight", "w2.bias"}
    assert state["extractor"]["pos_embed"].shape == (1, 64, 96)
    path = save_official(model, tmp_path / "lookwhere.pt")
    torch.manual_seed(123)
    other = LookWhere(model_config("tiny", **TINY)).eval()
    load_official(other, path)
    images = torch.randn(2, 3, 112, 112)
    a, b = model(images, k=9, dense=True), other(images, k=9, dense=True)
    for key in ("selector_map", "cls", "dense", "selected"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_official_layout_loads_at_another_resolution_with_pos_resampling(tmp_path):
    path = save_official(tiny_lookwhere(), tmp_path / "lw.pt")
    bigger = LookWhere(model_config("tiny", img_size=[168, 168], selector_img_size=56, selector_r=2))
    load_official(bigger, path)
    assert bigger.extractor.backbone.pos_embed.shape == (1, 144, 96)
    assert bigger(torch.randn(1, 3, 168, 168), k=10)["cls"].shape == (1, 96)


def test_official_layout_is_strict(tmp_path):
    state = export_official(tiny_lookwhere())
    state["extractor"]["blocks.0.attn.qkv.weight_typo"] = state["extractor"].pop("blocks.0.attn.qkv.weight")
    with pytest.raises(ValueError, match="key mismatch"):
        load_official(tiny_lookwhere(), state)
    with pytest.raises(ValueError, match="not a LookWhere checkpoint"):
        load_official(tiny_lookwhere(), {"extractor": {}})


def test_outputs_match_reference_style_forward():
    """The released inference path, written with timm's own modules: embed all patches (conv),
    add pos-embed, gather, prepend the selector's output prefix; non-antialiased resizes."""
    model = tiny_lookwhere(resize_mode="official").eval()
    images = torch.randn(2, 3, 112, 112)
    out = model(images, k=12, dense=True)
    sel_vit, ext_vit = model.selector.backbone, model.extractor.backbone
    with torch.no_grad():
        lo = F.interpolate(images, size=(56, 56), mode="bilinear", align_corners=False)
        t = sel_vit.forward_features(lo)
        prefix, toks = t[:, :5], t[:, 5:]
        h = model.selector.head.w2(F.gelu(model.selector.head.w1(toks)))  # (B, 16, r²)
        r = model.selector.head.r
        m = h.reshape(2, 4, 4, r, r).permute(0, 1, 3, 2, 4).reshape(2, 1, 4 * r, 4 * r)
        smap = F.interpolate(m, size=(8, 8), mode="bilinear", align_corners=False).flatten(1)
        keep = smap.topk(12, dim=1).indices
        x = ext_vit.patch_embed(images) + ext_vit.pos_embed
        x = torch.cat([prefix, gather_tokens(x, keep)], dim=1)
        x = ext_vit.norm(ext_vit.blocks(x))
    torch.testing.assert_close(out["selector_map"], smap, rtol=1e-5, atol=1e-5)
    assert torch.equal(out["selected"], keep)
    torch.testing.assert_close(out["cls"], x[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gather_tokens(out["dense"].flatten(2).transpose(1, 2), keep), x[:, 5:], rtol=1e-5, atol=1e-5)


def test_init_from_teacher_copies_extractor_and_first_selector_blocks():
    teacher = tiny_teacher()
    model = tiny_lookwhere()
    init_from_teacher(model, teacher.vit)
    t = teacher.vit.state_dict()
    for k, v in model.extractor.backbone.state_dict().items():
        assert torch.equal(v, t[k]), k
    sel = model.selector.backbone.state_dict()
    assert torch.equal(sel["blocks.1.mlp.fc2.weight"], t["blocks.1.mlp.fc2.weight"])
    assert torch.equal(sel["norm.weight"], t["norm.weight"])
    assert sel["pos_embed"].shape == (1, 16, 96)  # resampled 8x8 -> 4x4


# ---------------------------------------------------------------------------- distillation module


def distill_module(**kw) -> LookWhereDistill:
    return LookWhereDistill(
        model={"arch": "lookwhere", "preset": "tiny", **TINY},
        teacher={"name": None, "preset": "tiny", "img_size": [112, 112]},
        k_min=4,
        k_max=16,
        **kw,
    )


def test_student_gets_gradients_and_teacher_none():
    module = distill_module()
    parts, _ = module.losses(torch.randn(2, 3, 112, 112), 8)
    parts["total"].backward()
    missing = [n for n, p in module.student.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert missing == []
    assert all(p.grad is None for p in module.teacher.parameters())
    # the teacher is neither optimised nor saved
    assert not any(n.startswith("teacher") or "_teacher" in n for n in module.state_dict())
    assert all(p is not q for p in module.parameters() for q in module.teacher.parameters())


def test_one_to_one_patch_distillation_supervises_kept_positions():
    module = distill_module(patch_distill="one-to-one")
    parts, extra = module.losses(torch.randn(2, 3, 112, 112), 6)
    assert torch.isfinite(parts["patch"]) and extra["keep"].shape == (2, 6)


def test_k_sampling_depends_only_on_step():
    a, b = distill_module(), distill_module()
    ks = [a.sample_k(64, s) for s in range(50)]
    assert ks == [b.sample_k(64, s) for s in range(50)]
    assert min(ks) >= 4 and max(ks) <= 16 and len(set(ks)) > 3


# ---------------------------------------------------------------------------- segmentation


def test_segmenter_crops_padding_before_resizing_to_label_size():
    module = Segmenter(model={"arch": "vit", "preset": "tiny", **TINY}, num_classes=3)
    logits = torch.zeros(1, 3, 8, 8)
    logits[:, 1, :, :6] = 5.0  # valid region (6 patch columns = 84 px) predicts class 1
    logits[:, 2, :, 6:] = 5.0  # the padding predicts class 2
    batch = {
        "image": torch.zeros(1, 3, 112, 112),
        "image_size": torch.tensor([[112, 84]]),
        "masks": [torch.ones(30, 20, dtype=torch.long)],
    }
    _, pairs = module._loss_and_preds(logits, batch)
    pred, target = pairs[0]
    assert pred.shape == (1, 30, 20) and torch.equal(pred, target)


# ---------------------------------------------------------------------------- CLI runs


@pytest.fixture
def teacher_ckpt(tmp_path, root, monkeypatch):
    monkeypatch.chdir(root)
    code = main(
        ["fit", "experiment=demo_vit", *tiny_overrides(tmp_path), "trainer.max_steps=2", "trainer.limit_val_batches=1", "name=t"]
    )
    assert code == 0
    return next((tmp_path / "runs" / "t").glob("version_*/checkpoints/last.ckpt"))


def test_distill_then_finetune_and_segment_via_cli(tmp_path, teacher_ckpt, capsys):
    common = [*tiny_overrides(tmp_path, "lookwhere"), "trainer.max_steps=2", "trainer.limit_val_batches=1"]
    assert (
        main(
            [
                "fit",
                "experiment=demo_distill",
                *common,
                f"module.teacher.checkpoint={teacher_ckpt}",
                "module.k_min=4",
                "module.k_max=16",
                "module.val_k=8",
                "name=d",
            ]
        )
        == 0
    )
    assert "val/map_recall" in capsys.readouterr().out
    exported = next((tmp_path / "runs" / "d").glob("version_*/lookwhere.pt"))
    export = torch.load(exported, weights_only=True)
    assert set(export) == {"selector", "extractor", "resize_mode"} and export["resize_mode"] == "pretraining"
    assert (
        main(
            [
                "fit",
                "experiment=demo_finetune",
                *common,
                f"module.model.pretrained={exported}",
                "module.train_k=8",
                "module.eval_k=8",
                "module.eval_ks=[4,8]",
                "name=f",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "val/acc1_k/4=" in out and "val/acc1_k/8=" in out
    assert main(["validate", "experiment=demo_seg", *common, "module.train_k=16", "module.eval_k=16", "name=s"]) == 0
    assert "val/miou=" in capsys.readouterr().out


def test_distill_requires_teacher_checkpoint(tmp_path, root, monkeypatch, capsys):
    monkeypatch.chdir(root)
    assert main(["fit", "experiment=demo_distill", *tiny_overrides(tmp_path, "lookwhere")]) == 2
    assert "module.teacher.checkpoint" in capsys.readouterr().err
    assert (
        main(
            [
                "fit",
                "experiment=demo_distill",
                *tiny_overrides(tmp_path, "lookwhere"),
                f"module.teacher.checkpoint={tmp_path / 'no.ckpt'}",
            ]
        )
        == 2
    )
    assert "teacher checkpoint not found" in capsys.readouterr().err


def test_make_demo_quick_prints_the_table_and_writes_the_figures(tmp_path, root, monkeypatch, capsys):
    """`make demo` end to end (stages a-d) on a few samples: table rows, FLOP ratios and PNGs."""
    from lw_lightning import demo

    monkeypatch.chdir(root)
    assert (
        demo.main(["--quick", "--no-progress", "--output-dir", str(tmp_path), "--set", "trainer.enable_model_summary=false"]) == 0
    )
    out = capsys.readouterr().out
    table = out[out.index("model ") :].splitlines()
    rows = {line.split("  ")[0]: line.split() for line in table[1:5]}
    assert set(rows) == {"full-res ViT", "LookWhere k=13", "LookWhere k=25", "LookWhere k=51"}
    assert rows["full-res ViT"][-1] == "1.0x"
    assert 5.0 <= float(rows["LookWhere k=25"][-1].rstrip("x")) < float(rows["LookWhere k=13"][-1].rstrip("x"))
    assert re.search(r"selector at k=25: \d+% of the sign's patches selected, at least one in \d+%", out)
    for png in ("demo_selection_maps.png", "demo_accuracy_vs_flops.png"):
        assert (tmp_path / png).stat().st_size > 1000
