"""Device-side half of the video input pipeline: flip, colour jitter, colour drop, normalisation.

DataLoader workers only decode and crop (uint8 clips ``[T, H, W, C]``, see ``kinetics/clip_transform.py``); the
photometric part runs here on the whole batch after it reached the device, in the DataModule's
``on_after_batch_transfer``. Per-pixel colour work on a 32-frame 224² clip costs ~100 ms on one
CPU core but well under a millisecond per clip on a GPU, so moving it off the workers is what
lets them keep up with the model.

Parameters are drawn **per clip** (every frame of a clip changes alike, as in ViViT's DMVR
pipeline) with the same distributions as torchvision's ``v2.RandomHorizontalFlip(0.5)``,
``v2.RandomApply([v2.ColorJitter(b, c, s, h)], p)`` (factors uniform in ``[max(0, 1-x), 1+x]``,
hue in ``[-h, h]``, the four adjustments in a random order) and ``v2.RandomGrayscale(p)``. The
workers draw them (:meth:`VideoAugment.draw`, their seeded torch RNG, so runs stay reproducible
and a resumed run continues the same stream) and ship them in the batch as ``aug``; the device
applies them (:meth:`VideoAugment.apply`). The arithmetic follows torchvision's colour kernels
on float pixels in [0, 1] (the old worker path rounded to uint8 after each adjustment).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

#: columns of a clip's parameter row
FLIP, JITTER, GRAY, BRIGHT, CONTRAST, SATUR, HUE, ORDER = 0, 1, 2, 3, 4, 5, 6, 7
NUM_PARAMS = ORDER + 4


class VideoAugment:
    """Per-clip flip + colour jitter + colour drop, then ``(x/255 - mean) / std``.

    Args:
        flip: horizontal flip with probability 0.5.
        color_jitter: [brightness, contrast, saturation, hue] as in ``v2.ColorJitter``.
        color_jitter_prob / grayscale_prob: probability of jitter / colour drop per clip.
        mean / std: per-channel normalisation of [0, 1] pixels.
    """

    def __init__(
        self, flip: bool = False, color_jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1), color_jitter_prob: float = 0.0,
        grayscale_prob: float = 0.0, mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        if len(color_jitter) != 4:
            raise ValueError(f"color_jitter must be [brightness, contrast, saturation, hue], got {list(color_jitter)}")
        b, c, s, h = (float(v) for v in color_jitter)
        if min(b, c, s) < 0 or not 0 <= h <= 0.5:
            raise ValueError(f"color_jitter must be [brightness>=0, contrast>=0, saturation>=0, 0<=hue<=0.5], got {list(color_jitter)}")
        for name, prob in (("color_jitter_prob", color_jitter_prob), ("grayscale_prob", grayscale_prob)):
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {prob}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must have 3 entries (std > 0), got {list(mean)}, {list(std)}")
        self.flip = flip
        self.color_jitter = (b, c, s, h)
        self.color_jitter_prob = float(color_jitter_prob)
        self.grayscale_prob = float(grayscale_prob)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(v) for v in std)

    # -- parameters ---------------------------------------------------------------------------
    def draw(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``[n, NUM_PARAMS]`` float parameters, one row per clip (CPU, from ``generator`` or torch's RNG)."""
        u = torch.rand(n, 3, generator=generator)
        b, c, s, h = self.color_jitter
        lo = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h])
        hi = torch.tensor([1 + b, 1 + c, 1 + s, h])
        factors = lo + (hi - lo) * torch.rand(n, 4, generator=generator)
        order = torch.argsort(torch.rand(n, 4, generator=generator), dim=1)  # a uniform random permutation
        out = torch.empty(n, NUM_PARAMS)
        out[:, FLIP] = (u[:, 0] < 0.5).float() if self.flip else 0.0
        out[:, JITTER] = (u[:, 1] < self.color_jitter_prob).float()
        out[:, GRAY] = (u[:, 2] < self.grayscale_prob).float()
        out[:, BRIGHT:ORDER] = factors
        out[:, ORDER:] = order.float()
        return out

    # -- application --------------------------------------------------------------------------
    def batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """A collated Kinetics batch with uint8 ``video`` -> the same batch with float clips
        (training clips carry ``aug`` and are augmented; evaluation views are only normalised).
        A batch whose video is already float passes unchanged."""
        video = batch.get("video") if isinstance(batch, dict) else None
        if not isinstance(video, Tensor) or video.dtype != torch.uint8:
            return batch
        out = {k: v for k, v in batch.items() if k != "aug"}
        out["video"] = self.apply(video, batch["aug"]) if "aug" in batch else self.normalize(video)
        return out

    def normalize(self, video: Tensor) -> Tensor:
        """uint8 ``[..., T, H, W, C]`` -> float ``[..., C, T, H, W]`` normalised (evaluation views)."""
        x = video.float().div_(255.0)
        return self._normalize_float(x).movedim(-1, -4).contiguous()

    def _normalize_float(self, x: Tensor) -> Tensor:
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype)
        return x.sub_(mean).div_(std)

    def apply(self, video: Tensor, params: Tensor) -> Tensor:
        """uint8 clips ``[B, T, H, W, C]`` + ``[B, NUM_PARAMS]`` -> float ``[B, C, T, H, W]``."""
        if video.ndim != 5 or params.shape != (video.shape[0], NUM_PARAMS):
            raise ValueError(f"expected clips [B, T, H, W, 3] and params [B, {NUM_PARAMS}], got {tuple(video.shape)}, {tuple(params.shape)}")
        x = video.permute(0, 1, 4, 2, 3).float().div_(255.0)  # [B, T, C, H, W]: torchvision's image layout
        p = params.detach().to("cpu", torch.float32)  # one small sync: the grouping below is decided on the host
        flip = p[:, FLIP] > 0
        if bool(flip.any()):
            idx = flip.nonzero().squeeze(1).to(x.device)
            x[idx] = x[idx].flip(-1)
        jitter = p[:, JITTER] > 0
        if bool(jitter.any()):
            x = self._jitter(x, p, jitter)
        gray = p[:, GRAY] > 0
        if bool(gray.any()):
            idx = gray.nonzero().squeeze(1).to(x.device)
            x[idx] = TF.rgb_to_grayscale(x[idx], num_output_channels=3).contiguous()
        x = x.permute(0, 1, 3, 4, 2)  # back to [B, T, H, W, C] for a channel-last normalisation
        return self._normalize_float(x).permute(0, 4, 1, 2, 3).contiguous()

    def _jitter(self, x: Tensor, p: Tensor, on: Tensor) -> Tensor:
        # clips sharing an order of the four adjustments are done together: ≤ 24 groups
        orders = p[:, ORDER:].long()
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in on.nonzero().squeeze(1).tolist():
            groups.setdefault(tuple(orders[i].tolist()), []).append(i)
        factors = p[:, BRIGHT:ORDER].to(x.device)
        for order, members in groups.items():
            idx = torch.tensor(members, device=x.device)
            sub, f = x[idx], factors[idx].view(len(members), 4, 1, 1, 1, 1).unbind(1)
            for op in order:
                if self.color_jitter[op] == 0:  # v2.ColorJitter leaves out adjustments set to 0
                    continue
                sub = COLOR_OPS[op](sub, f[op])
            x[idx] = sub
        return x


# ------------------------------------------------------------------------------------------------
# torchvision's colour kernels with one factor per clip (``x``: [N, T, 3, H, W] float in [0, 1],
# ``f``: [N, 1, 1, 1, 1]); v2.functional takes a single Python float per call.
# ------------------------------------------------------------------------------------------------


def _gray(x: Tensor) -> Tensor:
    return TF.rgb_to_grayscale(x, num_output_channels=1)


def adjust_brightness(x: Tensor, f: Tensor) -> Tensor:
    return (x * f).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, f: Tensor) -> Tensor:
    mean = _gray(x).mean(dim=(-3, -2, -1), keepdim=True)  # per frame, as torchvision on [T, C, H, W]
    return (x * f + mean * (1 - f)).clamp_(0.0, 1.0)


def adjust_saturation(x: Tensor, f: Tensor) -> Tensor:
    return (x * f + _gray(x) * (1 - f)).clamp_(0.0, 1.0)


def adjust_hue(x: Tensor, f: Tensor) -> Tensor:
    """Rotate the hue by ``f`` turns (HSV round trip, as ``v2.functional.adjust_hue``)."""
    r, g, b = x.unbind(-3)
    maxc, _ = x.max(-3)
    minc, _ = x.min(-3)
    delta = maxc - minc
    grey = delta == 0
    safe = torch.where(grey, torch.ones_like(delta), delta)
    sat = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    hue = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = torch.where(grey, torch.zeros_like(hue), hue)
    hue = (hue / 6.0 + f.squeeze(-3)).remainder_(1.0)
    # HSV -> RGB: c(n) = v - v·s·max(0, min(k, 4-k, 1)), k = (n + 6h) mod 6, n = 5, 3, 1
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(3, 1, 1)
    k = (n + hue.unsqueeze(-3) * 6.0).remainder_(6.0)
    w = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    v, s = maxc.unsqueeze(-3), sat.unsqueeze(-3)
    return (v - v * s * w).clamp_(0.0, 1.0)


COLOR_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
