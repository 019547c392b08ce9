"""Shared measurement machinery: device setup, interleaved timing, activation memory, machine info.

Timings are wall-clock with a device synchronisation around each call, so a CUDA number is the
time of the work and not of its launch. Cases that are compared are timed *interleaved*
(A, B, C, A, B, C, …) so a load change on a shared machine hits every case alike, and reported as
medians over the repeats after the warm-up calls.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn


@dataclass
class Env:
    """Where and how a suite runs: device, compute dtype and the measurement protocol."""

    device: torch.device
    dtype: torch.dtype  #: autocast dtype on CUDA; float32 means no autocast
    warmup: int
    repeats: int

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def make_env(device: str, precision: str, threads: int | None, warmup: int, repeats: int) -> Env:
    """``device``: auto/cpu/cuda; ``precision``: auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("bench.device=cuda but no CUDA device is present")
    if precision == "auto":
        precision = "bf16" if device == "cuda" else "fp32"
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"bench.precision must be auto, bf16 or fp32, got {precision!r}")
    if threads:
        torch.set_num_threads(int(threads))
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (selector map, losses) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return Env(torch.device(device), torch.bfloat16 if precision == "bf16" else torch.float32, warmup, repeats)


@dataclass
class Case:
    """One timed callable. ``items`` is how many samples one call processes (for throughput)."""

    name: str
    fn: Callable[[], Any]
    items: int = 1
    times: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def spread(self) -> float:
        """Relative half-range (max-min)/(2·median): how noisy the repeats were."""
        if len(self.times) < 2:
            return 0.0
        return (max(self.times) - min(self.times)) / (2 * self.median)


def time_interleaved(cases: list[Case], env: Env, log: Callable[[str], None] = print) -> list[Case]:
    """Time every case ``env.warmup`` + ``env.repeats`` times, round-robin; keep the timed repeats.

    A case that raises (out of memory, a compile failure) is marked with ``error`` and dropped
    from later rounds instead of aborting the whole suite.
    """
    for rnd in range(env.warmup + env.repeats):
        for case in cases:
            if case.error:
                continue
            try:
                env.sync()
                start = time.perf_counter()
                case.fn()
                env.sync()
                elapsed = time.perf_counter() - start
            except Exception as err:  # keep the other cases' numbers
                case.error = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
                log(f"  {case.name}: FAILED ({case.error})")
                if env.cuda:
                    torch.cuda.empty_cache()
                continue
            if rnd >= env.warmup:
                case.times.append(elapsed)
            log(f"  [{'warm-up' if rnd < env.warmup else f'rep {rnd - env.warmup + 1}'}] {case.name}: {elapsed * 1e3:.1f} ms")
    return cases


def timing_fields(case: Case, key: str) -> dict[str, Any]:
    """``{key}_s`` (median), ``{key}_spread`` and, for a failed case, ``{key}_error``: a result row's view of a case."""
    fields: dict[str, Any] = {f"{key}_s": case.median, f"{key}_spread": case.spread}
    if case.error:
        fields[f"{key}_error"] = case.error
    return fields


# ------------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------------


def _is_weight_copy(t: torch.Tensor) -> bool:
    """An autocast copy of a parameter (``ToCopyBackward0`` straight off an ``AccumulateGrad``)."""
    fn = t.grad_fn
    if fn is None or type(fn).__name__ != "ToCopyBackward0":
        return False
    return any(nxt is not None and type(nxt).__name__ == "AccumulateGrad" for nxt, _ in fn.next_functions)


@contextlib.contextmanager
def saved_activation_bytes(model: nn.Module) -> Iterator[dict[str, int]]:
    """Count the bytes autograd keeps for backward while the block runs (one count per storage).

    Parameters and their autocast copies are excluded: what is left is the activation memory of a
    training step (inputs of the matmuls, attention outputs and statistics, norms, GELU inputs…),
    the quantity that grows with batch size and token count. Works on any device.
    """
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    result = {"bytes": 0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if isinstance(t, nn.Parameter) or _is_weight_copy(t):
            return t
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_ptrs and ptr not in seen:
            seen.add(ptr)
            result["bytes"] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield result


class CudaPeak:
    """Peak CUDA memory allocated above what was allocated on entry (no-op on CPU)."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.bytes: int | None = None

    def __enter__(self) -> CudaPeak:
        if self.env.cuda:
            torch.cuda.synchronize(self.env.device)
            torch.cuda.reset_peak_memory_stats(self.env.device)
            self.base = torch.cuda.memory_allocated(self.env.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.env.cuda and exc[0] is None:
            torch.cuda.synchronize(self.env.device)
            self.bytes = torch.cuda.max_memory_allocated(self.env.device) - self.base


# ------------------------------------------------------------------------------------------------
# machine description
# ------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def machine_info(env: Env) -> dict[str, str]:
    """Hardware and software the numbers were taken on."""
    info = {
        "cpu": f"{_cpu_model()}, {os.cpu_count()} logical cores visible, torch threads {torch.get_num_threads()}",
        "torch": torch.__version__,
        "device": str(env.device),
        "precision": "bf16 autocast" if env.dtype == torch.bfloat16 else "fp32",
        "load average at start (1/5/15 min)": load_average(),
    }
    try:
        with open("/proc/meminfo") as f:
            total_kb = int(f.readline().split()[1])
        info["memory"] = f"{total_kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    if env.cuda:
        props = torch.cuda.get_device_properties(env.device)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
        info["sdpa"] = "flash/mem-efficient (PyTorch dispatcher), timm fused_attn"
    return info


def fmt_bytes(n: int | float | None) -> str:
    if n is None or n != n:
        return "—"
    return f"{n / 2**20:,.0f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def fmt_time(seconds: float) -> str:
    if seconds != seconds:
        return "—"
    return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def maybe_compile(module: nn.Module | Callable, mode: str | None) -> Any:
    """``torch.compile`` with ``mode`` (``default``, ``reduce-overhead``…), or the module itself."""
    if not mode:
        return module
    return torch.compile(module, mode=None if mode == "default" else mode, dynamic=False)
