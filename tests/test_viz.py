"""Pictures of where the models look (lw_lightning.viz): the heat layer must read as heat."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from lw_lightning.viz import HEAT_RGB, heat_overlay, selection_overlay

SIGN_RED = (200, 20, 30)  # the synthetic signs' ring; the backgrounds take every hue, red included


def _red_image(size: int = 28) -> torch.Tensor:
    """An ImageNet-normalised image of the signs' red, as the datasets give it."""
    rgb = torch.tensor(SIGN_RED, dtype=torch.float32).view(3, 1, 1).expand(3, size, size) / 255
    return (rgb - torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)


def _chroma(px: np.ndarray) -> np.ndarray:
    """max - min over RGB: 0 for grey, large for a saturated colour."""
    return px.max(-1).astype(int) - px.min(-1).astype(int)


@pytest.mark.parametrize("kind", ["selection_overlay", "heat_overlay"])
def test_heat_is_the_only_colour_over_a_red_image(kind):
    """The left half has no heat, the right half the most. Where there is no heat the image must
    carry no colour at all (it is drawn grey), so a red image (a sign, a red background) cannot be
    mistaken for heat; where the heat is highest the pixel takes the heat's hue."""
    image = _red_image()
    heat = torch.zeros(2, 2)
    heat[:, 1] = 1.0
    if kind == "selection_overlay":  # LookWhere (and video LookWhere via viz_video), patch 14
        picture = selection_overlay(image, heat.flatten(), None, patch=14)
    else:  # TokenLearner's token maps
        picture = heat_overlay(image, heat)
    px = np.asarray(picture)
    cold, hot = px[:, :14].reshape(-1, 3), px[:, 14:].reshape(-1, 3)
    assert _chroma(cold).max() <= 1  # the image in grey: none of its red left to read as heat
    assert _chroma(hot).min() > 100  # the heat: strongly coloured ...
    assert (np.argmax(hot, -1) == np.argmax(HEAT_RGB)).all()  # ... in the heat's hue
