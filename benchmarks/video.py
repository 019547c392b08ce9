"""ViViT Model 1 with vs without TokenLearner: FLOPs, inference/training throughput, memory."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from lw_lightning.flops import count_flops
from lw_lightning.models.vivit import ViViT, vivit_config

from .common import Case, CudaPeak, Env, maybe_compile, saved_activation_bytes, time_interleaved, timing_fields
from .config import VideoSuite

NUM_CLASSES = 400


def vivit_flops(preset: str, num_frames: int, num_tokens: int = 0, loc: int | None = None) -> int:
    """Forward FLOPs of one clip on meta tensors."""
    with torch.device("meta"):
        model = ViViT(
            vivit_config(preset, num_frames=num_frames, num_tokens=num_tokens, tokenlearner_loc=loc), NUM_CLASSES
        ).eval()
        cfg = model.cfg
        x = torch.zeros(1, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    return count_flops(model, x)


def _name(preset: str, num_tokens: int, loc: int) -> str:
    base = f"ViViT-{preset[0].upper()}"
    return base if num_tokens == 0 else f"{base} + TokenLearner {num_tokens} at {loc}"


def run_preset(suite: VideoSuite, preset: str, env: Env, log: Callable[[str], None]) -> list[dict[str, Any]]:
    depth = vivit_config(preset).depth
    loc = suite.tokenlearner_loc if suite.tokenlearner_loc is not None else depth // 2
    train = suite.train_batch and (suite.train_presets is None or preset in suite.train_presets)
    torch.manual_seed(0)
    variants = []
    for nt in (0, suite.num_tokens):
        cfg = vivit_config(preset, num_frames=suite.num_frames, num_tokens=nt, tokenlearner_loc=loc if nt else None)
        model = ViViT(cfg, NUM_CLASSES).to(env.device).eval()
        nt_, nh, nw = cfg.grid
        variants.append(
            dict(
                name=_name(preset, nt, loc),
                preset=preset,
                num_tokens=nt,
                model=model,
                tokens_in=nt_ * nh * nw,
                tokens_out=model.num_output_tokens,
                flops=vivit_flops(preset, suite.num_frames, nt, loc if nt else None),
            )
        )
    shape = (3, suite.num_frames, variants[0]["model"].cfg.img_size, variants[0]["model"].cfg.img_size)
    cases: list[Case] = []
    modes = [None] + ([suite.compile] if suite.compile else [])
    for b in suite.batch_sizes:
        x = torch.randn(b, *shape, device=env.device)
        for v in variants:
            for mode in modes if b == suite.batch_sizes[0] else [None]:  # compiled: latency batch only
                fwd = maybe_compile(v["model"], mode)

                def call(fwd=fwd, x=x, m=v["model"]) -> None:
                    m.eval()
                    with torch.inference_mode(), env.autocast():
                        fwd(x)

                tag = f" [compiled {mode}]" if mode else ""
                cases.append(Case(f"{v['name']}{tag} | infer b={b}", call, items=b))
    if train:
        b = suite.train_batch
        x = torch.randn(b, *shape, device=env.device)
        y = torch.randint(NUM_CLASSES, (b,), device=env.device)
        for v in variants:
            cases.append(Case(f"{v['name']} | train b={b}", _train_step(v["model"], x, y, env), items=b))
    log(f"video {preset}: timing {len(cases)} cases interleaved")
    time_interleaved(cases, env, log)
    by_name = {c.name: c for c in cases}
    rows = []
    for v in variants:
        row = {k: v[k] for k in ("name", "preset", "num_tokens", "tokens_in", "tokens_out", "flops")}
        row.update(num_frames=suite.num_frames, img_size=shape[-1], tubelet=list(v["model"].cfg.tubelet))
        row["loc"] = loc if v["num_tokens"] else None
        for mode in modes:
            tag = f" [compiled {mode}]" if mode else ""
            key = "" if mode is None else "compiled_"
            for b in suite.batch_sizes if mode is None else suite.batch_sizes[:1]:
                row.update(timing_fields(by_name[f"{v['name']}{tag} | infer b={b}"], f"{key}infer_b{b}"))
        if train:
            row["train_batch"] = suite.train_batch
            row.update(timing_fields(by_name[f"{v['name']} | train b={suite.train_batch}"], "train"))
            if suite.memory:
                _memory(v["model"], row, suite.train_batch, shape, env, log)
        rows.append(row)
    del variants, cases, by_name
    gc.collect()
    if env.cuda:
        torch.cuda.empty_cache()
    return rows


def _train_step(model: ViViT, x: torch.Tensor, y: torch.Tensor, env: Env) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)  # ViViT's optimizer

    def step() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        with env.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    return step


def _memory(model: ViViT, row: dict, b: int, shape: tuple, env: Env, log: Callable[[str], None]) -> None:
    x = torch.randn(b, *shape, device=env.device)
    y = torch.randint(NUM_CLASSES, (b,), device=env.device)
    model.train()
    try:
        with CudaPeak(env) as peak:
            with saved_activation_bytes(model) as saved, env.autocast():
                loss = F.cross_entropy(model(x).float(), y)
            loss.backward()
        row["act_bytes"], row["train_peak_bytes"] = saved["bytes"], peak.bytes
    except Exception as err:
        row["memory_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
    model.zero_grad(set_to_none=True)
    log(f"  memory {row['name']}: activations {row.get('act_bytes', 0) / 2**20:.0f} MiB")


def run_video(suite: VideoSuite, env: Env, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    rows = []
    for preset in suite.presets:
        rows.extend(run_preset(suite, preset, env, log))
    return rows
