"""The DINOv2 teacher from a local weights file (``module.teacher.name`` + ``checkpoint``): the
same features as timm's own model loading that file, for the HF/timm safetensors layout and the
original facebookresearch/dinov2 ``.pth`` layout; and a bad file is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lw_lightning.cli import main
from lw_lightning.config import ConfigError
from lw_lightning.models.teacher import TeacherConfig, build_teacher

from .conftest import random_weights, skip_weight_init, timm_layout, tiny_overrides

DINOV2 = "vit_base_patch14_reg4_dinov2.lvd142m"
SIZE = [112, 112]  # the teacher's input size: both loaders resample the 518 px grid (37x37 -> 8x8)


def original_dinov2_layout(state: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """``state`` (timm names) in the facebookresearch/dinov2 layout of the hub ``.pth`` files:
    ``register_tokens`` for ``reg_token``, a ``pos_embed`` with a CLS position in front (timm
    folds it into ``cls_token``), and the unused ``mask_token``."""
    gen = torch.Generator().manual_seed(seed)
    dim = state["cls_token"].shape[-1]
    cls_pos = torch.randn(1, 1, dim, generator=gen) * 0.02
    out = {k: v for k, v in state.items() if k not in ("cls_token", "reg_token", "pos_embed")}
    out["cls_token"] = state["cls_token"] - cls_pos
    out["pos_embed"] = torch.cat([cls_pos, state["pos_embed"]], dim=1)  # (1, 1 + 37*37, D)
    out["register_tokens"] = state["reg_token"]
    out["mask_token"] = torch.randn(1, dim, generator=gen)
    return out


@pytest.fixture(scope="module")
def dinov2_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from safetensors.torch import save_file

    base = tmp_path_factory.mktemp("dinov2")
    state = random_weights(timm_layout(DINOV2), seed=0, scale=0.02)
    files = {"safetensors": base / "model.safetensors", "pth": base / "dinov2_vitb14_reg4_pretrain.pth"}
    save_file(state, str(files["safetensors"]))
    original = original_dinov2_layout(state)
    assert {"register_tokens", "mask_token", "blocks.0.ls1.gamma"} <= set(original) and original["pos_embed"].shape[1] == 1370
    torch.save(original, files["pth"])
    # the bad inputs: cut-off copies, a file missing the last block, one of another width
    for name in ("safetensors", "pth"):
        with open(files[name], "rb") as f:
            files[f"truncated_{name}"] = base / f"truncated.{name}"
            files[f"truncated_{name}"].write_bytes(f.read(files[name].stat().st_size // 3))
    files["missing"] = base / "missing.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("blocks.11.")}, str(files["missing"]))
    files["narrow"] = base / "narrow.safetensors"
    save_file(random_weights(timm_layout(DINOV2, embed_dim=64, num_heads=2, depth=12)), str(files["narrow"]))
    return files


@pytest.fixture(scope="module")
def loaded(dinov2_files: dict[str, Path]) -> dict[str, torch.nn.Module]:
    """Our teacher from each layout, and timm's own model loading the original ``.pth``
    (timm's DINOv2 conversion, run by timm itself)."""
    import timm

    with pytest.MonkeyPatch.context() as mp:
        skip_weight_init(mp)
        out: dict[str, torch.nn.Module] = {
            layout: build_teacher(TeacherConfig(name=DINOV2, checkpoint=str(dinov2_files[layout]), img_size=SIZE))
            for layout in ("safetensors", "pth")
        }
        overlay = {"file": str(dinov2_files["pth"])}
        out["timm"] = timm.create_model(
            DINOV2, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=0, img_size=tuple(SIZE)
        ).eval()
    return out


@pytest.mark.parametrize("layout", ["safetensors", "pth"])
def test_dinov2_teacher_from_a_local_file_matches_timm(loaded, layout):
    images = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = loaded[layout](images)
        ref = loaded["timm"].forward_features(images)  # (B, 1 + 4 + N, D) after the final norm
    torch.testing.assert_close(ours["cls"], ref[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours["patch"], ref[:, 5:], rtol=1e-5, atol=1e-5)
    assert ours["patch"].shape == (2, 64, 768) and ours["cls"].abs().max() > 0.1


def test_both_layouts_give_the_same_weights(loaded):
    a, b = loaded["safetensors"].vit.state_dict(), loaded["pth"].vit.state_dict()
    assert list(a) == list(b)
    for name, x in a.items():
        torch.testing.assert_close(x, b[name], rtol=0, atol=1e-7, msg=name)  # cls_token: (c - p) + p


@pytest.mark.parametrize(
    "case, message",
    [
        ("narrow", f"does not fit {DINOV2}: 'cls_token' has shape [1, 1, 64] in the checkpoint, [1, 1, 768] in the model"),
        (
            "missing",
            f"does not fit {DINOV2} (key mismatch): 14 missing keys ['blocks.11.attn.proj.bias', 'blocks.11.attn.proj.weight', "
            "'blocks.11.attn.qkv.bias'] (+11 more)",
        ),
        ("truncated_safetensors", "is truncated or corrupt"),
        ("truncated_pth", "is truncated or corrupt"),
    ],
)
def test_bad_teacher_file_is_one_line(dinov2_files, case, message, tmp_path, capsys, no_weight_init):
    path = dinov2_files[case]
    with pytest.raises(ConfigError) as err:
        build_teacher(TeacherConfig(name=DINOV2, checkpoint=str(path), img_size=SIZE))
    assert str(err.value).startswith(f"teacher checkpoint {path} ") and message in str(err.value), err.value
    # through the CLI: one line on stderr, exit status 2
    common = [*tiny_overrides(tmp_path, "lookwhere"), "callbacks.images=null"]
    code = main(
        [
            "fit",
            "experiment=demo_distill",
            *common,
            f"module.teacher.name={DINOV2}",
            f"module.teacher.checkpoint={path}",
            f"module.teacher.img_size=[{SIZE[0]},{SIZE[1]}]",
        ]
    )
    err_text = capsys.readouterr().err.strip()
    assert code == 2 and len(err_text.splitlines()) == 1 and "Traceback" not in err_text and message in err_text, err_text
