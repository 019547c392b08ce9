"""Frame-index sampling: bounds, strides, offsets, short videos, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lw_lightning.data.sampling import clip_indices, clip_span, eval_clip_starts, max_start, sample_test_clips, sample_train_clip


@pytest.mark.parametrize("total", [15, 16, 40, 250])
def test_train_clip_fits_and_covers_all_offsets(total):
    g = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(400):
        idx = sample_train_clip(total, 8, 2, g)
        assert idx.shape == (8,) and idx.min() >= 0 and idx.max() < total
        assert (np.diff(idx) == 2).all()  # a clip that fits is never wrapped
        starts.add(int(idx[0]))
    top = total - clip_span(8, 2)
    assert starts == set(range(top + 1)) if top < 50 else len(starts) > 50


def test_train_clip_is_reproducible_with_a_seed():
    a = [sample_train_clip(100, 4, 3, torch.Generator().manual_seed(7)).tolist() for _ in range(2)]
    assert a[0] == a[1]


def test_short_videos_loop_or_clamp():
    assert clip_indices(5, 0, 8, 1, "loop").tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert clip_indices(5, 0, 8, 1, "clamp").tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    assert clip_indices(1, 0, 3, 2).tolist() == [0, 0, 0]
    assert max_start(5, 8, 2) == 0
    g = torch.Generator().manual_seed(0)
    assert sample_train_clip(6, 4, 2, g).tolist() == [0, 2, 4, 0]  # only start 0 exists
    with pytest.raises(ValueError, match="empty"):
        clip_indices(0, 0, 4, 1)
    with pytest.raises(ValueError, match="out_of_bounds"):
        clip_indices(5, 0, 4, 1, "wrap")


def test_test_clips_are_evenly_spaced_and_deterministic():
    assert eval_clip_starts(100, 8, 2, 4) == [0, 28, 57, 85]  # max start 85
    assert eval_clip_starts(100, 8, 2, 1) == [42]  # one clip: centred
    clips = sample_test_clips(100, 8, 2, 4)
    assert clips.shape == (4, 8) and clips[-1, -1] == 99 and clips[0, 0] == 0
    assert np.array_equal(clips, sample_test_clips(100, 8, 2, 4))
    short = sample_test_clips(10, 8, 2, 3)  # shorter than a clip: all start at 0, looped
    assert (short == short[0]).all() and short[0].tolist() == [0, 2, 4, 6, 8, 0, 2, 4]
