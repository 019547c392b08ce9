"""The optional torchcodec decoder (``data.decoder=torchcodec``): the same frames as decord, upright,
at the decoder's size, PyAV behind it, in forked workers and from the CLI. Tests that decode skip
where torchcodec or the system's FFmpeg libraries are missing (``.ci/run`` installs both); the
configuration errors are tested everywhere."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from lw_lightning.cli import main
from lw_lightning.config import ConfigError
from lw_lightning.data import video_io
from lw_lightning.data.kinetics import ClipTransform, KineticsDataset, VideoRecord
from lw_lightning.data.synthetic_kinetics import write_video
from lw_lightning.data.video_io import VideoReadError, _torchcodec_clip, read_clip_frames, torchcodec_problem

from .test_kinetics import dm

needs_torchcodec = pytest.mark.skipif(torchcodec_problem() is not None, reason=f"{torchcodec_problem()}")


def _marked(num_frames: int = 6, height: int = 32, width: int = 64) -> np.ndarray:
    frames = np.random.default_rng(0).integers(0, 200, (num_frames, height, width, 3), dtype=np.uint8)
    frames[:, :4, :4] = 255  # a marker in the top-left corner as shown
    return frames


@needs_torchcodec
def test_torchcodec_reads_exactly_what_decord_reads(tmp_path):
    frames = _marked(10)
    write_video(tmp_path / "v.mp4", frames, lossless=True)
    idx = np.array([[7, 0, 3], [3, 9, 9]])  # unsorted, repeated, two clips
    got = read_clip_frames(tmp_path / "v.mp4", lambda n: idx, decoder="torchcodec")
    assert got.shape == (2, 3, 32, 64, 3) and got.dtype == np.uint8
    assert np.array_equal(got, frames[idx])
    assert np.array_equal(got, read_clip_frames(tmp_path / "v.mp4", lambda n: idx, decoder="decord"))
    lengths = []
    _torchcodec_clip(tmp_path / "v.mp4", lambda n: lengths.append(n) or np.arange(n))
    assert lengths == [10]  # choose() sees the exact frame count (packet scan)


@needs_torchcodec
def test_torchcodec_scales_in_the_decoder(tmp_path):
    frames = np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None, None, :, None], 32, axis=1)  # horizontal ramp
    frames = np.broadcast_to(frames, (4, 32, 64, 3)).copy()
    write_video(tmp_path / "ramp.mp4", frames, lossless=True)
    got = read_clip_frames(tmp_path / "ramp.mp4", lambda n: np.array([0, 2]), size=(16, 32), decoder="torchcodec")
    assert got.shape == (2, 16, 32, 3)
    expected = frames[0, ::2, ::2].astype(float)  # every other pixel of a ramp: what a 2x downscale gives, to rounding
    assert np.abs(got[0].astype(float) - expected).mean() < 6


@needs_torchcodec
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
@pytest.mark.parametrize("rotation", [90, 270])
def test_torchcodec_decodes_rotated_videos_upright(tmp_path, suffix, rotation):
    upright = _marked(4)
    stored = np.ascontiguousarray(np.rot90(upright, k=-rotation // 90, axes=(1, 2)))
    path = tmp_path / f"phone{suffix}"
    write_video(path, stored, lossless=True, rotation=rotation)
    got = read_clip_frames(path, lambda n: np.array([0, 3]), decoder="torchcodec")
    assert np.array_equal(got, upright[[0, 3]])  # MP4: torchcodec turns it; MKV: probed, turned by PyAV
    small = read_clip_frames(path, lambda n: np.array([1]), size=(16, 32), decoder="torchcodec")
    assert small.shape == (1, 16, 32, 3) and (small[0, :2, :2] > 200).all()


@needs_torchcodec
def test_torchcodec_failures_fall_back_to_pyav_or_name_both(tmp_path, caplog, monkeypatch):
    frames = _marked(6)
    path = tmp_path / "v.mp4"
    write_video(path, frames, lossless=True)
    with pytest.raises(ValueError, match="outside"):  # a caller's bad index is a bug, not a corrupt video
        _torchcodec_clip(path, lambda n: np.array([n]))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(path.read_bytes()[:300])  # truncated: the container header survives, frames don't
    with pytest.raises(VideoReadError) as failure:
        _torchcodec_clip(bad, lambda n: np.arange(n))
    assert failure.value.__context__ is None  # raised outside the handler: no decoder kept alive by a traceback
    with pytest.raises(VideoReadError, match="cannot open video .*bad.mp4.*PyAV"):
        read_clip_frames(bad, lambda n: np.arange(n), decoder="torchcodec")

    def refuses(path, choose, size=None):
        raise VideoReadError(f"cannot decode video {path}: unsupported")

    monkeypatch.setitem(video_io._FAST, "torchcodec", refuses)  # a file torchcodec cannot read, PyAV can
    with caplog.at_level(logging.INFO, logger="lw_lightning.data.video_io"):
        assert np.array_equal(read_clip_frames(path, lambda n: np.array([5, 1]), decoder="torchcodec"), frames[[5, 1]])
    assert "torchcodec failed, PyAV decoded" in caplog.text


@needs_torchcodec
def test_datamodule_decodes_with_torchcodec_in_forked_workers(kinetics_root):
    ref, data = dm(kinetics_root), dm(kinetics_root, decoder="torchcodec", num_workers=2, persistent_workers=False)
    data.setup("fit")
    ref.setup("fit")
    train = data.build_dataset("train")
    assert train.decoder == "torchcodec"
    torch.manual_seed(0)
    a = train.train_clip(0)
    torch.manual_seed(0)
    b = ref.build_dataset("train").train_clip(0)
    assert torch.equal(a, b)  # same frames, same crop: the decoders agree on lossless files
    loader = data.train_dataloader()
    assert loader.dataset.sizes.eq(0).all()
    batches = list(loader)
    assert sum(len(b["label"]) for b in batches) == 8 and batches[0]["video"].shape == (2, 4, 32, 32, 3)
    assert loader.dataset.sizes.gt(0).all()  # learnt by torchcodec in the workers, shared with this process
    val = data.build_dataset("val")
    assert all(bool(val[i]["valid"]) for i in range(len(val)))
    assert torch.equal(val[0]["video"], ref.build_dataset("val")[0]["video"])


def test_decoder_choice_is_checked(kinetics_root, monkeypatch):
    with pytest.raises(ConfigError, match=r"data.decoder must be one of \['decord', 'torchcodec'\], got 'pyav'"):
        dm(kinetics_root, decoder="pyav")
    from lw_lightning.data.kinetics import datamodule

    monkeypatch.setattr(datamodule, "torchcodec_problem", lambda: "torchcodec finds no FFmpeg libraries (apt install ffmpeg)")
    with pytest.raises(ConfigError, match=r"data.decoder=torchcodec: torchcodec finds no FFmpeg .*; or use data.decoder=decord"):
        dm(kinetics_root, decoder="torchcodec")
    assert dm(kinetics_root).decoder == "decord"  # the default needs nothing optional
    with pytest.raises(ValueError, match="decoder must be one of"):
        read_clip_frames(kinetics_root / "x.mp4", lambda n: np.arange(n), decoder="av")


def test_torchcodec_problem_names_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torchcodec(name, *args, **kw):
        if name == "torchcodec":
            raise ImportError("No module named 'torchcodec'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_torchcodec)
    assert torchcodec_problem() == "torchcodec does not import (No module named 'torchcodec'); pip install torchcodec"


@needs_torchcodec
def test_cli_fits_with_torchcodec(kinetics_root, tmp_path, capsys, monkeypatch):
    calls = []

    def counted(*args, **kw):
        calls.append(args[0])
        return video_io._torchcodec_clip(*args, **kw)

    monkeypatch.setitem(video_io._FAST, "torchcodec", counted)  # in this process: data.num_workers=0
    args = [
        "experiment=demo_video",
        f"data.root={kinetics_root}",
        f"output_dir={tmp_path}",
        "data.decoder=torchcodec",
        "data.num_workers=0",
        "data.batch_size=4",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "callbacks.images=null",
    ]
    assert main(["fit", *args]) == 0, capsys.readouterr().err[-2000:]
    assert len(calls) >= 4 + 1  # a training batch of 4 clips and a validation batch, all through torchcodec
    (saved,) = tmp_path.rglob("config.yaml")
    assert "decoder: torchcodec" in saved.read_text()  # the run records its decoder
    bad = main(["fit", *args, "data.decoderr=torchcodec"])
    err = capsys.readouterr().err
    assert bad == 2 and "data.decoder" in err  # the unknown key is rejected with the right one suggested


@needs_torchcodec
def test_torchcodec_decodes_large_sources_at_their_stored_size(tmp_path):
    """Its scaler is slower than the worker's crop-then-resize (docs/video.md), so the dataset never plans it."""
    frames = np.random.default_rng(3).integers(0, 256, (8, 96, 128, 3), dtype=np.uint8)
    write_video(tmp_path / "big.mp4", frames, lossless=True)
    records = [VideoRecord(str(tmp_path / "big.mp4"), 0, "big")]
    geo = ClipTransform(32, [36, 40], 36, "scale_jitter")  # 96 >= 1.5 x 40: decord would be asked to resize
    asked = []

    class Recording(KineticsDataset):
        def decode(self, path, choose, size):
            asked.append(size)
            return super().decode(path, choose, size)

    for decoder in ("decord", "torchcodec"):
        train = Recording(records, True, geo, 4, 1, decoder=decoder)
        train.sizes[0] = torch.tensor([96, 128], dtype=torch.int32)  # the size known (from epoch 2 on)
        assert train.train_clip(0).shape == (4, 32, 32, 3)
        val = Recording(records, False, geo, 4, 1, num_clips=2, num_crops=3, decoder=decoder)
        val.sizes[0] = torch.tensor([96, 128], dtype=torch.int32)
        assert val[0]["video"].shape == (6, 4, 32, 32, 3)
    assert asked[:2] == [asked[0], (36, 48)] and asked[0] is not None  # decord: decoded at the planned sizes
    assert asked[2:] == [None, None]  # torchcodec: at the stored size
    assert geo.ratio == 1.5  # the caller's transform is left as it was
