"""The split video pipeline: worker geometry (uint8), device augmentation (flip / colour / normalise),
decoder-side resizing and PyAV keyframe seeking. Compared against torchvision's own kernels and the
previous worker transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from lw_lightning.config import ConfigError
from lw_lightning.data.kinetics import ClipTransform, KineticsDataModule, KineticsDataset, VideoRecord, short_side_size
from lw_lightning.data.synthetic_kinetics import write_video
from lw_lightning.data.video_augment import BRIGHT, COLOR_OPS, FLIP, GRAY, HUE, JITTER, NUM_PARAMS, ORDER, VideoAugment
from lw_lightning.data.video_io import _pyav_clip, _pyav_scan, _pyav_seek_frames, probe, read_clip_frames

JITTER_ALL = dict(flip=True, color_jitter=(0.8, 0.8, 0.8, 0.2), color_jitter_prob=1.0, grayscale_prob=0.0)


def _clips(b: int = 3, t: int = 4, h: int = 12, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (b, t, h, w, 3), dtype=np.uint8))


def _static(b: int = 4, t: int = 6) -> torch.Tensor:
    frame = _clips(1, 1, 16, 16, seed=1)[0, 0]
    return frame.expand(b, t, 16, 16, 3).contiguous()


def test_static_clip_every_frame_changes_alike():
    aug = VideoAugment(**{**JITTER_ALL, "grayscale_prob": 0.3})
    video = _static(b=16)
    params = aug.draw(16, torch.Generator().manual_seed(0))
    out = aug.apply(video, params)  # [B, C, T, H, W]
    assert out.shape == (16, 3, 6, 16, 16) and out.dtype == torch.float32
    for clip in out:
        assert torch.equal(clip, clip[:, :1].expand_as(clip)), "frames of one clip were augmented differently"
    plain = VideoAugment().apply(video, VideoAugment().draw(16))
    changed = [not torch.allclose(a, b) for a, b in zip(out, plain)]
    assert all(changed)  # jitter always on (p=1) with wide factors
    assert not torch.allclose(out[0], out[1])  # clips draw their own parameters


def test_seeded_draws_are_reproducible_and_seeds_differ():
    aug = VideoAugment(**{**JITTER_ALL, "grayscale_prob": 0.5})
    a = aug.draw(32, torch.Generator().manual_seed(7))
    b = aug.draw(32, torch.Generator().manual_seed(7))
    c = aug.draw(32, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    video = _clips(b=32)
    assert torch.equal(aug.apply(video, a), aug.apply(video, b))
    torch.manual_seed(3)
    d = aug.draw(4)  # the worker path: the process's seeded torch RNG
    torch.manual_seed(3)
    assert torch.equal(d, aug.draw(4))


def test_draws_follow_torchvisions_distributions():
    aug = VideoAugment(flip=True, color_jitter=(0.4, 0.3, 0.2, 0.1), color_jitter_prob=0.8, grayscale_prob=0.1)
    p = aug.draw(20000, torch.Generator().manual_seed(0))
    assert p.shape == (20000, NUM_PARAMS)
    assert abs(p[:, FLIP].mean() - 0.5) < 0.02 and abs(p[:, JITTER].mean() - 0.8) < 0.02 and abs(p[:, GRAY].mean() - 0.1) < 0.01
    lo, hi = torch.tensor([0.6, 0.7, 0.8, -0.1]), torch.tensor([1.4, 1.3, 1.2, 0.1])
    f = p[:, BRIGHT : HUE + 1]
    assert (f >= lo).all() and (f <= hi).all()
    assert torch.allclose(f.mean(0), (lo + hi) / 2, atol=0.01)  # uniform in the ColorJitter ranges
    orders = p[:, ORDER:].long()
    assert (orders.sort(1).values == torch.arange(4)).all()  # permutations of the four adjustments
    assert len({tuple(o) for o in orders.tolist()}) == 24
    assert not VideoAugment(flip=False).draw(100)[:, FLIP].any()


@pytest.mark.parametrize(
    "op, tv_op", [(0, TF.adjust_brightness), (1, TF.adjust_contrast), (2, TF.adjust_saturation), (3, TF.adjust_hue)]
)
def test_batched_colour_kernels_equal_torchvision_per_clip(op, tv_op):
    x = _clips(b=4, t=3).permute(0, 1, 4, 2, 3).float() / 255  # [B, T, C, H, W]
    factors = torch.tensor([0.5, 1.0, 1.3, 1.8]) if op < 3 else torch.tensor([-0.4, -0.05, 0.0, 0.3])
    got = COLOR_OPS[op](x.clone(), factors.view(4, 1, 1, 1, 1))
    for i in range(4):
        torch.testing.assert_close(got[i], tv_op(x[i], float(factors[i])), atol=1e-5, rtol=0)


def test_apply_equals_torchvision_chain_with_the_drawn_parameters():
    aug = VideoAugment(**{**JITTER_ALL, "grayscale_prob": 0.5})
    video = _clips(b=8, t=3)
    params = aug.draw(8, torch.Generator().manual_seed(1))
    got = aug.apply(video, params)
    tv_ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(8):
        x = video[i].permute(0, 3, 1, 2).float() / 255  # [T, C, H, W]
        if params[i, FLIP]:
            x = TF.horizontal_flip(x)
        if params[i, JITTER]:
            for op in params[i, ORDER:].long().tolist():
                x = tv_ops[op](x, float(params[i, BRIGHT + op]))
        if params[i, GRAY]:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        x = TF.normalize(x, [0.5] * 3, [0.5] * 3).permute(1, 0, 2, 3)
        torch.testing.assert_close(got[i], x, atol=1e-5, rtol=0)


def test_colour_drop_makes_the_whole_clip_grey_and_keeps_motion():
    video = _clips(b=2, t=4)
    out = VideoAugment(grayscale_prob=1.0).apply(video, VideoAugment(grayscale_prob=1.0).draw(2))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert not torch.equal(out[:, :, 0], out[:, :, 1])


def _old_normalize(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """The previous worker transform's normalisation: uint8 [T, C, H, W] -> [C, T, H, W]."""
    m = torch.full((3, 1, 1, 1), mean)
    s = torch.full((3, 1, 1, 1), std)
    return (x.permute(1, 0, 2, 3).float() / 255.0 - m) / s


def _old_resize_short_side(x: torch.Tensor, size: int) -> torch.Tensor:
    """The previous worker resize: float antialiased bilinear, rounded back to uint8."""
    out = F.interpolate(
        x.float(), size=short_side_size(*x.shape[-2:], size), mode="bilinear", align_corners=False, antialias=True
    )
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _smooth_frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    coarse = torch.from_numpy(np.random.default_rng(seed).uniform(0, 255, (t, 3, h // 16 + 2, w // 16 + 2))).float()
    return F.interpolate(coarse, size=(h, w), mode="bicubic").clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()


def test_eval_views_normalise_exactly_as_before_and_resize_within_one_level():
    frames = _smooth_frames(5, 48, 64)
    clips = np.stack([frames, frames[::-1].copy()])
    geo = ClipTransform(32, [36, 40], 36, "scale_jitter")
    aug = VideoAugment(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))
    views = geo.eval(clips, 3)  # uint8 [6, T, 32, 32, 3]
    assert views.shape == (6, 5, 32, 32, 3) and views.dtype == torch.uint8
    new = aug.batch({"video": views[None]})["video"][0]  # [6, C, T, 32, 32]
    old_views, new_from_same_pixels = [], []
    for c, clip in enumerate(clips):
        x = _old_resize_short_side(torch.from_numpy(clip).permute(0, 3, 1, 2), 36)
        for v, (top, left) in enumerate([(2, 0), (2, 8), (2, 16)]):  # start / centre / end of the 36x48 frame
            old_views.append(_old_normalize(x[..., top : top + 32, left : left + 32], 0.45, 0.225))
            new_from_same_pixels.append(_old_normalize(views[c * 3 + v].permute(0, 3, 1, 2), 0.45, 0.225))
    # same uint8 pixels -> bit-identical normalised views
    assert torch.equal(new, torch.stack(new_from_same_pixels))
    # the uint8 resize kernel differs from the old float one by at most one grey level
    assert (new - torch.stack(old_views)).abs().max() <= 1 / 255 / 0.225 + 1e-5


def test_train_crop_is_cut_before_resizing_and_matches_the_old_geometry():
    frames = _smooth_frames(3, 60, 80, seed=2)
    geo = ClipTransform(32, [40, 48], 40, "scale_jitter", decoder_resize_ratio=None)
    for seed in range(5):
        torch.manual_seed(seed)
        plan = geo.train_plan(60, 80)
        got = geo.apply(frames, plan)
        torch.manual_seed(seed)  # the same draws, old order: resize the frame, then crop
        size = int(torch.randint(40, 49, (1,)))
        rh, rw = short_side_size(60, 80, size)
        top, left = int(torch.randint(rh - 31, (1,))), int(torch.randint(rw - 31, (1,)))
        old = _old_resize_short_side(torch.from_numpy(frames).permute(0, 3, 1, 2), size)[..., top : top + 32, left : left + 32]
        assert got.shape == (3, 32, 32, 3) and got.is_contiguous()
        # the box is rounded to whole source pixels (≤ 0.5 px, ~1% of scale): smooth content differs by a few levels
        assert (got.permute(0, 3, 1, 2).float() - old.float()).abs().mean() < 6


def test_decoder_resizes_large_sources_and_crops_stay_inside(tmp_path):
    frames = _smooth_frames(6, 96, 128, seed=3)
    path = tmp_path / "big.mkv"
    write_video(path, frames, lossless=True)
    assert (probe(path).height, probe(path).width) == (96, 128)
    small = read_clip_frames(path, lambda n: np.array([0, 5]), size=(36, 48))
    assert small.shape == (2, 36, 48, 3)
    # the decoder's scaling (FFmpeg's bicubic) matches an antialiased resize of the full frame closely
    ref = _old_resize_short_side(torch.from_numpy(frames[[0, 5]]).permute(0, 3, 1, 2), 36).permute(0, 2, 3, 1)
    assert (torch.from_numpy(small).float() - ref.float()).abs().mean() < 4
    geo = ClipTransform(32, [36, 40], 36, "scale_jitter")  # 96 >= 1.5 x 40: decoder resizes
    for seed in range(10):
        torch.manual_seed(seed)
        plan = geo.train_plan(96, 128)
        assert plan.decode_size is not None and plan.box[2:] == (32, 32)
        top, left = plan.box[:2]
        assert 0 <= top <= plan.frame[0] - 32 and 0 <= left <= plan.frame[1] - 32
    assert geo.eval_decode_size(96, 128) == (36, 48) and geo.eval_decode_size(40, 50) is None
    rrc = ClipTransform(16, [20, 20], 20, "random_resized")
    for seed in range(10):
        torch.manual_seed(seed)
        plan = rrc.train_plan(96, 128)
        h, w = plan.frame
        assert plan.box[0] + plan.box[2] <= h and plan.box[1] + plan.box[3] <= w
        assert rrc.apply(np.zeros((2, h, w, 3), np.uint8), plan).shape == (2, 16, 16, 3)


def test_rotated_video_decodes_upright_at_the_requested_size(tmp_path):
    upright = _smooth_frames(4, 32, 48, seed=4)
    stored = np.ascontiguousarray(np.rot90(upright, k=-1, axes=(1, 2)))  # [4, 48, 32, 3]
    path = tmp_path / "rot.mkv"
    write_video(path, stored, lossless=True, rotation=90)
    info = probe(path)
    assert (info.rotation, info.height, info.width) == (90, 32, 48)  # the upright size
    got = read_clip_frames(path, lambda n: np.array([1, 2]), size=(16, 24))
    assert got.shape == (2, 16, 24, 3)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_mp4_goes_to_decord_unprobed_and_comes_out_upright(tmp_path, rotation):
    upright = np.zeros((4, 32, 48, 3), np.uint8)
    upright[:, :4, :4] = 255  # a marker in the top-left corner as shown
    stored = np.ascontiguousarray(np.rot90(upright, k=-rotation // 90, axes=(1, 2)))
    path = tmp_path / "phone.mp4"
    write_video(path, stored, lossless=True, rotation=rotation)
    assert probe(path) == probe(path).__class__(0, 0, 0)  # no PyAV probe: decord rotates MP4 itself
    got = read_clip_frames(path, lambda n: np.array([0, 3]))
    assert got.shape == (2, 32, 48, 3) and (got[:, :4, :4] > 200).all()
    assert read_clip_frames(path, lambda n: np.array([1]), size=(16, 24)).shape == (1, 16, 24, 3)


class _RecordingDataset(KineticsDataset):
    """Records the decoder size it asks for (in this process only)."""

    asked: list

    def decode(self, path, choose, size):
        self.asked.append(size)
        return super().decode(path, choose, size)


def test_sizes_learnt_in_workers_plan_decoder_resizes_everywhere(tmp_path):
    frames = _smooth_frames(8, 96, 128, seed=5)
    records = []
    for i in range(2):
        write_video(tmp_path / f"v{i}.mp4", frames, lossless=True)  # MP4: no probe, size unknown at first
        records.append(VideoRecord(str(tmp_path / f"v{i}.mp4"), 0, f"v{i}"))
    geo = ClipTransform(32, [36, 40], 36, "scale_jitter")  # 96 >= 1.5 x 40: the decoder resizes once the size is known
    train = _RecordingDataset(records, True, geo, 4, 1)
    train.asked = []
    assert train.sizes.is_shared() and train.frame_size(0) == (0, 0)
    # Forked workers decode with decord. Before the fix in video_io._decord_clip, running this module's
    # rotated-MP4 tests first (decord fails on them in this process) made these workers hang or crash.
    batches = list(DataLoader(train, batch_size=1, num_workers=2, timeout=60))
    assert [tuple(b["video"].shape) for b in batches] == [(1, 4, 32, 32, 3)] * 2
    assert train.sizes.tolist() == [[96, 128], [96, 128]]  # learnt in the two workers, seen by this process
    assert train.train_clip(1).shape == (4, 32, 32, 3)
    ((h, w),) = train.asked  # planned from the shared size: decoded at the jittered short side, not at 96 x 128
    assert 36 <= min(h, w) <= 40 and w == round(h * 4 / 3)
    val = _RecordingDataset(records, False, geo, 4, 1, num_clips=2)
    val.asked = []
    first, second = val[0], val[0]
    assert val.asked == [None, (36, 48)]  # stored size on the first visit, then the eval short side
    assert first["video"].shape == second["video"].shape == (2, 4, 32, 32, 3)
    assert (first["video"].float() - second["video"].float()).abs().mean() < 4  # the decoder's resize vs the worker's


def test_pyav_seeks_to_keyframes_and_reads_exact_frames(tmp_path):
    import av

    frames = np.random.default_rng(5).integers(0, 256, (60, 16, 16, 3), dtype=np.uint8)
    path = tmp_path / "gop.mp4"
    with av.open(str(path), "w") as container:  # lossless, a keyframe every 10 frames, B-frames
        stream = container.add_stream("libx264rgb", rate=25)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "rgb24"
        stream.codec_context.gop_size = 10
        stream.options = {"crf": "0", "keyint_min": "10", "bf": "2", "sc_threshold": "0"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    index = _pyav_scan(path)
    assert index.total == 60 and index.pts is not None and len(index.keys) == 6
    wanted = {3, 5, 41, 44, 57}
    got = _pyav_seek_frames(path, wanted, index)
    assert got is not None and sorted(got) == sorted(wanted)
    for i in wanted:
        assert np.array_equal(got[i], frames[i])
    idx = np.array([[50, 52, 54], [2, 4, 6]])
    assert np.array_equal(_pyav_clip(path, lambda n: idx), frames[idx])

    decoded = []
    real_decode = av.container.InputContainer.decode

    def counting(self, *a, **kw):
        for frame in real_decode(self, *a, **kw):
            decoded.append(frame.pts)
            yield frame

    av.container.InputContainer.decode = counting
    try:
        _pyav_seek_frames(path, {55, 57}, index)
    finally:
        av.container.InputContainer.decode = real_decode
    assert len(decoded) <= 12  # from the keyframe at 50, not from frame 0


def test_datamodule_checks_pipeline_settings(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(ConfigError, match="data.decoder_resize_ratio must be >= 1"):
        KineticsDataModule(str(tmp_path), img_size=32, train_short_side=[32, 36], eval_short_side=36, decoder_resize_ratio=0.5)
    with pytest.raises(ConfigError, match=r"data.color_jitter must be \[brightness"):
        KineticsDataModule(
            str(tmp_path), img_size=32, train_short_side=[32, 36], eval_short_side=36, color_jitter=[0.4, 0.4, 0.4, 0.9]
        )


def test_float_batches_pass_through_unchanged():
    batch = {"video": torch.randn(2, 3, 4, 8, 8), "label": torch.tensor([0, 1])}
    assert VideoAugment().batch(batch) is batch
