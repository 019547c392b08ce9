"""LookWhere vs the released inference code (antofuller/lookwhere ``LookWhereDownstream``), side
by side on one random checkpoint in the release's layout and noise images, fp32 on the CPU.

The reference is imported from a checkout of its repository, unmodified (it needs ``einops``):

    git clone https://github.com/antofuller/lookwhere /tmp/lookwhere
    pip install --target /tmp/lookwhere/pylib einops==0.8.2
    PYTHONPATH=/tmp/lookwhere/pylib python benchmarks/lookwhere_parity.py --reference /tmp/lookwhere

Prints, per size and ``resize_mode``, the selector map, top-k, CLS and K-NN-filled dense
differences (docs/parity.md has the numbers).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from lw_lightning.models.checkpoint import load_official, resolve_pretrained_config
from lw_lightning.models.config import model_config
from lw_lightning.models.knn_upsample import knn_upsample
from lw_lightning.models.lookwhere import LookWhere

DINOV2 = "vit_base_patch14_reg4_dinov2.lvd142m"
K = {224: 128, 518: 137, 994: 252}


def random_release(path: Path, seed: int = 0) -> None:
    """Random weights in the release's layout and shapes: N(0, 0.02), LayerScale / norm weights ~1."""
    import timm

    gen = torch.Generator().manual_seed(seed)

    def rand(shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
        out = {}
        for key, shape in shapes.items():
            x = torch.randn(shape, generator=gen) * 0.02
            out[key] = x + 1.0 if key.endswith(".gamma") or (key.endswith(".weight") and len(shape) == 1) else x
        return out

    with torch.device("meta"):
        sel = timm.create_model(DINOV2, depth=3, num_classes=0, pretrained=False, img_size=154)
        ext = timm.create_model(DINOV2, num_classes=0, pretrained=False, img_size=518)
    head = {
        "w1.weight": torch.Size([3072, 768]),
        "w1.bias": torch.Size([3072]),
        "w2.weight": torch.Size([16, 3072]),
        "w2.bias": torch.Size([16]),
    }
    state = {
        "selector": {
            "backbone": rand({k: v.shape for k, v in sel.state_dict().items()}),
            "head": {k: torch.randn(s, generator=gen) * 0.05 for k, s in head.items()},
        },
        "extractor": rand({k: v.shape for k, v in ext.state_dict().items()}),
    }
    torch.save(state, path)


def compare(path: Path, size: int, k: int, downstream: type) -> list[str]:
    torch.manual_seed(size)
    images = torch.randn(2, 3, size, size)
    ref = downstream(str(path), size, num_classes=0, k=k, is_cls=True, device="cpu").eval()
    with torch.no_grad():
        r_map = ref.selector(images)["selector_map"]
        r_keep = r_map.topk(k, sorted=True).indices
        r_cls = ref(images)
        ref.is_cls = False
        r_dense = ref(images).flatten(2).transpose(1, 2)  # (B, N, D): no head
    del ref
    lines = []
    for mode in (None, "pretraining"):
        cfg = resolve_pretrained_config(model_config("base", img_size=[size, size], pretrained=str(path), resize_mode=mode))
        model = load_official(LookWhere(cfg), path).eval()
        with torch.no_grad():
            out = model(images, k=k, dense=True)
        keep = out["selected"]
        overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(keep, r_keep)) / keep.numel()
        dense = out["dense"].flatten(2).transpose(1, 2)
        cells = ((dense - r_dense).abs().amax(-1) > 1e-4).float().mean().item()
        lines.append(
            f"{size}px k={k} resize_mode={cfg.resize_mode} (r={cfg.selector_r}): "
            f"map max|d|={(out['selector_map'] - r_map).abs().max().item():.2e}, "
            f"top-k same order={bool(torch.equal(keep, r_keep))} overlap={overlap:.1%}, "
            f"CLS max|d|={(out['cls'] - r_cls).abs().max().item():.2e}, "
            f"dense max|d|={(dense - r_dense).abs().max().item():.2e} (cells > 1e-4: {cells:.1%})"
        )
        if cfg.resize_mode == "official":  # the same tokens, with topk's choice among equal distances
            alt = knn_upsample(out["tokens"], keep, (size // 14, size // 14), tie_break="topk")
            lines.append(
                f"  the same tokens, topk tie-break: cells > 1e-4: {((alt - r_dense).abs().amax(-1) > 1e-4).float().mean().item():.1%}"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="checkout of antofuller/lookwhere (modeling.py, utils.py)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(K), choices=list(K))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lookwhere_parity"))
    args = parser.parse_args()
    sys.path.insert(0, str(args.reference.resolve()))
    from modeling import LookWhereDownstream  # the released inference code

    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / "lookwhere_dinov2.pt"  # the release's file name (its loader checks it)
    if not path.exists():
        random_release(path)
    for size in args.sizes:
        start = time.time()
        for line in compare(path, size, K[size], LookWhereDownstream):
            print(line, flush=True)
        print(f"  ({time.time() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
