"""LookWhere vs the full-resolution ViT: FLOPs, latency, throughput, training step, activation memory.

Per resolution group, one full-resolution ViT and one LookWhere model (selector + extractor of the
same preset, built at that resolution so no positional-embedding resampling runs per call) are
timed side by side. LookWhere trains with the selector frozen (the fine-tuning protocol of
``ImageClassifier``); the extractor, a linear head and AdamW run as in training.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from lw_lightning.flops import count_flops
from lw_lightning.models.config import model_config, resolve_k
from lw_lightning.models.lookwhere import LookWhere, build_model

from .common import Case, CudaPeak, Env, maybe_compile, saved_activation_bytes, time_interleaved, timing_fields
from .config import ImageGroup, ImageSuite

NUM_CLASSES = 1000


def k_label(k: Any, n: int) -> str:
    kk = resolve_k(k, n)
    return f"k={kk} ({kk / n:.0%})" if isinstance(k, float) else f"k={kk}"


def forward_fn(model: nn.Module, k: Any, gather_pixels: bool = True) -> Callable[[torch.Tensor], Any]:
    """Inference call of ``model``; ``gather_pixels=False`` runs the reference extractor path that
    embeds every patch and gathers the k it keeps afterwards."""
    if k is None:
        return lambda x: model(x)["cls"]
    if gather_pixels:
        return lambda x: model(x, k=k)["cls"]

    def embed_all_then_gather(x: torch.Tensor) -> torch.Tensor:
        grid = model.grid(x)
        sel = model.selector(x, grid)
        keep = model.select(sel["map"], k)
        return model.extractor(x, keep, sel["prefix"], gather_pixels=False)[:, 0]

    return embed_all_then_gather


def _variants(suite: ImageSuite, group: ImageGroup) -> list[dict[str, Any]]:
    size = group.size
    n = (size // 14) ** 2
    out = [dict(name=f"ViT-{suite.preset} full ({n} patches)", arch="vit", k=None, gather=True)]
    for k in group.ks:
        out.append(dict(name=f"LookWhere-{suite.preset} {k_label(k, n)}", arch="lookwhere", k=k, gather=True))
    if group.embed_then_gather and group.ks:
        k = group.ks[0]
        out.append(
            dict(name=f"LookWhere-{suite.preset} {k_label(k, n)}, embed all then gather", arch="lookwhere", k=k, gather=False)
        )
    return out


def count_variant_flops(preset: str, size: int, arch: str, k: Any, gather: bool = True, **fields: Any) -> int:
    """Forward FLOPs of one image on meta tensors (no compute, exact shapes); ``fields``: more
    :class:`ModelConfig` fields (e.g. ``tokenlearner_loc=0.25``)."""
    with torch.device("meta"):
        model = build_model(model_config(preset, arch=arch, img_size=[size, size], **fields)).eval()
        x = torch.zeros(1, 3, size, size)
    return count_flops(forward_fn(model, k, gather), x)


def train_step_fn(model: nn.Module, head: nn.Linear, k: Any, x: torch.Tensor, y: torch.Tensor, env: Env) -> Callable[[], None]:
    """One timed training step: forward, cross-entropy on ``head``, backward, AdamW (selector frozen)."""
    params = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)  # tiny lr: weights stay sane over the repeats

    def step() -> None:
        model.train()
        if isinstance(model, LookWhere):
            model.selector.eval()
        opt.zero_grad(set_to_none=True)
        with env.autocast():
            feats = model(x, k=k)["cls"] if k is not None else model(x)["cls"]
            loss = F.cross_entropy(head(feats).float(), y)
        loss.backward()
        opt.step()

    return step


def run_group(suite: ImageSuite, group: ImageGroup, env: Env, log: Callable[[str], None]) -> list[dict[str, Any]]:
    size = group.size
    n = (size // 14) ** 2
    variants = _variants(suite, group)
    log(f"images {size}x{size}: counting FLOPs")
    for v in variants:
        v["flops"] = count_variant_flops(suite.preset, size, v["arch"], v["k"], v["gather"])
        v["tokens"] = n if v["k"] is None else resolve_k(v["k"], n)
    torch.manual_seed(0)
    models = {
        arch: build_model(model_config(suite.preset, arch=arch, img_size=[size, size])).to(env.device)
        for arch in ("vit", "lookwhere")
    }
    models["lookwhere"].selector.requires_grad_(False)  # frozen selector: the fine-tuning protocol
    for m in models.values():
        m.eval()
    dim = models["vit"].embed_dim
    cases: list[Case] = []
    compiled: dict[tuple, Any] = {}
    for b in group.batch_sizes:
        x = torch.randn(b, 3, size, size, device=env.device)
        for v in variants:
            # compiled rows at the latency batch only: that is where launch overhead (which CUDA
            # graphs remove) matters, and each extra shape costs another compilation
            compile_here = group.compile and b == group.batch_sizes[0] and v["gather"]
            for mode in [None] + ([group.compile] if compile_here else []):
                fwd = forward_fn(models[v["arch"]], v["k"], v["gather"])
                fwd = maybe_compile(fwd, mode)
                compiled[(v["name"], b, mode)] = fwd

                def call(fwd=fwd, x=x) -> None:
                    with torch.inference_mode(), env.autocast():
                        fwd(x)

                tag = f" [compiled {mode}]" if mode else ""
                cases.append(Case(f"{v['name']}{tag} | infer b={b}", call, items=b))
    heads = {}
    if group.train_batch:
        b = group.train_batch
        x = torch.randn(b, 3, size, size, device=env.device)
        y = torch.randint(NUM_CLASSES, (b,), device=env.device)
        for v in variants:
            if not v["gather"]:
                continue
            head = heads.setdefault(v["arch"], nn.Linear(dim, NUM_CLASSES).to(env.device))
            cases.append(Case(f"{v['name']} | train b={b}", train_step_fn(models[v["arch"]], head, v["k"], x, y, env), items=b))
    log(f"images {size}x{size}: timing {len(cases)} cases interleaved")
    time_interleaved(cases, env, log)
    by_name = {c.name: c for c in cases}
    rows = []
    for v in variants:
        row: dict[str, Any] = dict(size=size, model=v["name"], arch=v["arch"], k=v["k"], tokens=v["tokens"], flops=v["flops"])
        for mode in [None] + ([group.compile] if group.compile and v["gather"] else []):
            tag = f" [compiled {mode}]" if mode else ""
            key = "" if mode is None else "compiled_"
            for b in group.batch_sizes if mode is None else group.batch_sizes[:1]:
                row.update(timing_fields(by_name[f"{v['name']}{tag} | infer b={b}"], f"{key}infer_b{b}"))
        if group.train_batch and v["gather"]:
            row.update(timing_fields(by_name[f"{v['name']} | train b={group.train_batch}"], "train"))
        rows.append(row)
    if group.memory and group.train_batch:
        _measure_memory(models, heads, variants, rows, group, env, log)
    del models, heads, cases, compiled, by_name
    gc.collect()
    if env.cuda:
        torch.cuda.empty_cache()
    return rows


def train_activation_bytes(model: nn.Module, head: nn.Linear, k: Any, x: torch.Tensor, y: torch.Tensor, env: Env) -> int:
    """Bytes autograd saves for backward in one training forward (``head`` on the CLS features,
    cross-entropy; a LookWhere selector frozen); runs the backward and clears the gradients."""
    model.train()
    if isinstance(model, LookWhere):
        model.selector.eval()
    with saved_activation_bytes(model) as saved, env.autocast():
        feats = model(x, k=k)["cls"] if k is not None else model(x)["cls"]
        loss = F.cross_entropy(head(feats).float(), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    head.zero_grad(set_to_none=True)
    return saved["bytes"]


def _measure_memory(models, heads, variants, rows, group: ImageGroup, env: Env, log: Callable[[str], None]) -> None:
    """Saved-for-backward bytes of a training forward (any device) and CUDA peaks."""
    size, b = group.size, group.train_batch
    x = torch.randn(b, 3, size, size, device=env.device)
    y = torch.randint(NUM_CLASSES, (b,), device=env.device)
    for v, row in zip(variants, rows):
        if not v["gather"]:
            continue
        model, head = models[v["arch"]], heads[v["arch"]]
        try:
            with CudaPeak(env) as peak:
                row["act_bytes"] = train_activation_bytes(model, head, v["k"], x, y, env)
            row["train_peak_bytes"] = peak.bytes
            if env.cuda:
                model.eval()
                xb = torch.randn(group.batch_sizes[-1], 3, size, size, device=env.device)
                with CudaPeak(env) as peak, torch.inference_mode(), env.autocast():
                    forward_fn(model, v["k"])(xb)
                row["infer_peak_bytes"] = peak.bytes
                row["infer_peak_batch"] = group.batch_sizes[-1]
        except Exception as err:  # an OOM of the full-res model must not cost the other numbers
            row["memory_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            log(f"  memory {v['name']}: FAILED ({row['memory_error']})")
            if env.cuda:
                torch.cuda.empty_cache()
        log(f"  memory {v['name']}: activations {row.get('act_bytes', 0) / 2**20:.0f} MiB")


def run_images(suite: ImageSuite, env: Env, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    rows = []
    for group in suite.groups:
        rows.extend(run_group(suite, group, env, log))
    return rows
