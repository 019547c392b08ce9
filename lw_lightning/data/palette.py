"""Colours of label PNGs: the palette a predicted mask is saved with (mode "P", one colour per
stored label value)."""

from __future__ import annotations

import numpy as np


def indexed_palette(n: int) -> np.ndarray:
    """(n, 3) uint8: PASCAL VOC's colour table (0 black, then well-separated colours), the
    common default of indexed label PNGs; defined for any n <= 256."""
    if not 0 < n <= 256:
        raise ValueError(f"a palette PNG holds 1..256 colours, not {n}")
    colours = np.zeros((n, 3), dtype=np.uint8)
    for value in range(n):
        c, r, g, b = value, 0, 0, 0
        for bit in range(7, -1, -1):  # the value's bits, interleaved into the high bits of r, g, b
            r |= (c & 1) << bit
            g |= ((c >> 1) & 1) << bit
            b |= ((c >> 2) & 1) << bit
            c >>= 3
        colours[value] = (r, g, b)
    return colours
