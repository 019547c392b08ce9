"""python -m lw_lightning.prep_videos on tiny generated Kinetics trees: sizes, keyframe interval,
layout and names kept, rotation baked in, resume, atomic writes and a corrupt input reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lw_lightning.data.kinetics import KineticsDataModule
from lw_lightning.data.synthetic_kinetics import write_video
from lw_lightning.data.video_io import _pyav_scan, count_frames, probe, read_frames
from lw_lightning.prep_videos import FAILURES_FILE, PrepOptions, main, prepare_tree, prepare_video, target_size


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth moving content (compresses like video, survives scaling recognisably)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        out[t, ..., 0] = (xx / w * 255 + 4 * t) % 256
        out[t, ..., 1] = yy / h * 255
        out[t, ..., 2] = 128 + 60 * np.sin((xx + yy + 3 * t + seed) / 9)
    return out


def write_vp9_webm(path: Path, frames: np.ndarray, fps: int = 12) -> None:
    """A real WebM (VP9), as many Kinetics files are."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "30", "b:v": "0", "deadline": "realtime", "cpu-used": "8"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture
def tree(tmp_path) -> Path:
    """A folders-layout Kinetics copy: two classes, mp4 / mkv / webm names, one corrupt file."""
    src = tmp_path / "src"
    (src / "train" / "abseiling").mkdir(parents=True)
    (src / "train" / "air drumming").mkdir(parents=True)
    write_video(src / "train" / "abseiling" / "a_000001_000011.mp4", _frames(40, 96, 128))
    write_video(src / "train" / "abseiling" / "b_000002_000012.mkv", _frames(30, 60, 80, 1))  # already small
    write_vp9_webm(src / "train" / "air drumming" / "c_000003_000013.webm", _frames(20, 72, 96, 2))
    bad = src / "train" / "air drumming" / "d_000004_000014.mp4"
    write_video(bad, _frames(10, 64, 64))
    bad.write_bytes(bad.read_bytes()[:300])  # truncated: the header survives, the frames do not
    (src / "classes.txt").write_text("abseiling\nair drumming\n")
    return src


def test_prep_reads_the_same_video_suffixes_as_the_loader():
    from lw_lightning import prep_videos
    from lw_lightning.data import kinetics

    assert prep_videos.VIDEO_EXTS == kinetics.VIDEO_EXTS


def test_target_size_scales_down_only_to_even_dims():
    assert target_size(720, 1280, 320) == (320, 568)
    assert target_size(1080, 607, 320) == (568, 320)
    assert target_size(240, 320, 320) == (240, 320)  # no upscaling
    assert target_size(241, 321, 320) == (240, 320)


def test_prepare_tree_keeps_layout_sizes_keyframes_and_reports_the_corrupt_file(tree, tmp_path, capsys):
    dst = tmp_path / "dst"
    code = main([str(tree), str(dst), "--short-side", "48", "--keyint", "8", "--workers", "2", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1  # one file failed
    assert "1 failed" in captured.out and "d_000004_000014.mp4" in captured.err
    assert (dst / FAILURES_FILE).read_text().startswith("train/air drumming/d_000004_000014.mp4\t")
    assert (dst / "classes.txt").read_text() == "abseiling\nair drumming\n"
    out = {p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file()}
    assert out == {
        "classes.txt",
        FAILURES_FILE,
        "train/abseiling/a_000001_000011.mp4",
        "train/abseiling/b_000002_000012.mkv",
        "train/air drumming/c_000003_000013.webm",
    }  # no partial files left, names kept
    a = dst / "train/abseiling/a_000001_000011.mp4"
    assert count_frames(a) == 40
    assert read_frames(a, [0]).shape == (1, 48, 64, 3)
    index = _pyav_scan(a)
    assert len(index.keys) == 5  # a keyframe every 8 frames
    assert read_frames(dst / "train/abseiling/b_000002_000012.mkv", [29]).shape == (1, 48, 64, 3)
    assert read_frames(dst / "train/air drumming/c_000003_000013.webm", [19]).shape == (1, 48, 64, 3)
    # content survives: the prepared frame is the source frame scaled down
    src_small = read_frames(
        tree / "train/abseiling/a_000001_000011.mp4",
        [10],
    )[0, ::2, ::2].astype(float)
    assert np.abs(read_frames(a, [10])[0].astype(float) - src_small).mean() < 12
    # the prepared tree is a data root as it was
    dm = KineticsDataModule(
        str(dst),
        label_map="classes.txt",
        num_frames=4,
        frame_stride=2,
        img_size=32,
        train_short_side=[36, 40],
        eval_short_side=36,
    )
    assert dm.layout == "folders" and dm.num_classes == 2 and len(dm.records("train")) == 3


def test_resume_skips_finished_outputs_and_redoes_partial_ones(tree, tmp_path):
    dst = tmp_path / "dst"
    opts = PrepOptions(short_side=48, keyint=8)
    first = prepare_tree(tree, dst, opts, progress=False)
    assert len(first.written) == 3 and len(first.failed) == 1
    done = dst / "train/abseiling/a_000001_000011.mp4"
    stamp = done.stat().st_mtime_ns
    (dst / "train/abseiling/b_000002_000012.mkv").unlink()  # as if the run had died while writing it
    (dst / "train/abseiling/.b_000002_000012.mkv.partial").write_bytes(b"half a file")
    second = prepare_tree(tree, dst, opts, progress=False)
    assert second.written == ["train/abseiling/b_000002_000012.mkv"]
    assert sorted(second.skipped) == ["train/abseiling/a_000001_000011.mp4", "train/air drumming/c_000003_000013.webm"]
    assert done.stat().st_mtime_ns == stamp
    assert not (dst / "train/abseiling/.b_000002_000012.mkv.partial").exists()
    assert list(second.failed) == ["train/air drumming/d_000004_000014.mp4"]  # still reported on every run


def test_rotation_is_baked_into_the_pixels(tmp_path):
    upright = _frames(6, 32, 48)
    stored = np.ascontiguousarray(np.rot90(upright, k=-1, axes=(1, 2)))
    src = tmp_path / "rot.mkv"
    write_video(src, stored, rotation=90)
    dst = tmp_path / "out" / "rot.mkv"
    assert prepare_video(src, dst, PrepOptions(short_side=32, keyint=4)) == 6
    info = probe(dst)
    assert (info.rotation, info.height, info.width) == (0, 32, 48)
    assert np.abs(read_frames(dst, [3])[0].astype(float) - read_frames(src, [3])[0].astype(float)).mean() < 12


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main([str(tmp_path / "absent"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "src").mkdir()
    assert main([str(tmp_path / "src"), str(tmp_path / "src" / "inside")]) == 2
    assert "must not be the source folder or inside it" in capsys.readouterr().err
