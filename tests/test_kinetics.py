"""Kinetics data: exact decord reads, annotation/filename parsing, the three layouts, missing and
corrupt videos, multi-view batches. All videos are written here with PyAV (lossless H.264)."""

from __future__ import annotations

import gc
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lw_lightning.config import ConfigError
from lw_lightning.data.kinetics import KineticsDataModule, parse_clip_filename, read_annotation_csv, read_list_file
from lw_lightning.data.synthetic_kinetics import CLASS_NAMES, write_video
from lw_lightning.data.video_io import VideoReadError, _decord_clip, count_frames, display_rotation, read_frames


@pytest.fixture
def root(kinetics_root, tmp_path) -> Path:
    """A private copy tests may damage."""
    return Path(shutil.copytree(kinetics_root, tmp_path / "kinetics"))


def dm(root: Path, **kw) -> KineticsDataModule:
    opts = dict(
        num_frames=4, frame_stride=2, img_size=32, train_short_side=[32, 36], eval_short_side=40, batch_size=2, flip=False
    )
    return KineticsDataModule(str(root), **{**opts, **kw})


@pytest.mark.parametrize("size", [32, 64])
def test_decord_reads_exactly_what_a_lossless_writer_wrote(tmp_path, size):
    frames = np.random.default_rng(size).integers(0, 256, (10, size, size, 3), dtype=np.uint8)
    write_video(tmp_path / "v.mp4", frames, lossless=True)
    idx = [7, 0, 3, 3, 9]  # unsorted, repeated
    assert np.array_equal(read_frames(tmp_path / "v.mp4", idx), frames[idx])


def test_decord_frames_are_handed_over_without_a_copy_and_freed(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (16, 96, 128, 3), dtype=np.uint8)
    write_video(tmp_path / "v.mp4", frames, lossless=True)
    got = _decord_clip(tmp_path / "v.mp4", lambda n: np.arange(0, n, 2))
    assert np.array_equal(got, frames[::2]) and got.flags.writeable
    owner = got
    while isinstance(owner, np.ndarray) and owner.base is not None:
        owner = owner.base
    assert not got.flags.owndata and isinstance(owner, torch.Tensor)  # a view of decord's buffer (DLPack), no copy

    def rss_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20

    for _ in range(5):  # allocator warm-up
        _decord_clip(tmp_path / "v.mp4", lambda n: np.arange(n))
    before = rss_mb()
    for _ in range(150):  # 150 x 590 KB: a buffer never freed would add ~86 MB
        _decord_clip(tmp_path / "v.mp4", lambda n: np.arange(n))
    assert rss_mb() - before < 30


def test_a_failed_decord_read_leaves_no_reader_alive(tmp_path):
    """decord's error holds decord's frames, and with them the reader, through its traceback. A reader
    still alive when DataLoader workers fork is destroyed in a child without its decoder threads: the
    workers hang or crash (seen running test_video_pipeline.py's rotated-MP4 tests, on which decord fails,
    before its shared-sizes test: 5 failures in 5 runs before this fix)."""
    tiny = tmp_path / "tiny.mp4"  # decord 0.6.0 opens it, then fails in get_batch
    write_video(tiny, np.random.default_rng(0).integers(0, 256, (6, 20, 24, 3), dtype=np.uint8), lossless=True)
    gc.collect()
    gc.disable()  # so that a reader in a reference cycle stays visible
    try:
        with pytest.raises(VideoReadError) as failure:
            _decord_clip(tiny, lambda n: np.arange(n))
        assert failure.value.__context__ is None
        del failure
        assert read_frames(tiny, [0, 5]).shape == (2, 20, 24, 3)  # decord fails again, PyAV decodes
        alive = [o for o in gc.get_objects() if type(o).__name__ == "VideoReader"]
    finally:
        gc.enable()
    assert alive == []


@pytest.mark.parametrize("width, height", [(24, 20), (48, 36)])
def test_tiny_video_decord_rejects_is_decoded_by_pyav(tmp_path, width, height):
    frames = np.random.default_rng(width).integers(0, 256, (9, height, width, 3), dtype=np.uint8)
    path = tmp_path / "tiny.mp4"
    write_video(path, frames, lossless=True)
    with pytest.raises(VideoReadError):  # decord 0.6.0 alone fails on these valid files
        _decord_clip(path, lambda n: np.arange(n))
    idx = [8, 0, 4, 4]
    assert np.array_equal(read_frames(path, idx), frames[idx])  # exact: the PyAV fallback
    assert count_frames(path) == 9


def test_truly_corrupt_video_still_fails_with_both_decoders(tmp_path):
    path = tmp_path / "bad.mp4"
    write_video(path, np.zeros((4, 20, 24, 3), np.uint8), lossless=True)
    corrupt(path)
    with pytest.raises(VideoReadError, match="cannot open video .*bad.mp4.*PyAV"):
        read_frames(path, [0])


def _marked(num_frames: int = 5, height: int = 32, width: int = 64) -> np.ndarray:
    """Frames with a white 4x4 marker in the top-left corner and a grey one top-right (as shown)."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    frames[:, :4, :4] = 255
    frames[:, :4, -4:] = 128
    return frames


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_video_is_decoded_upright(tmp_path, suffix, rotation):
    upright = _marked()
    # a phone stores the frames as captured (here: the upright picture turned clockwise by
    # `rotation`) plus a display matrix saying "turn counter-clockwise by `rotation` to show"
    stored = np.ascontiguousarray(np.rot90(upright, k=-rotation // 90, axes=(1, 2)))
    path = tmp_path / f"rot{rotation}{suffix}"
    write_video(path, stored, lossless=True, rotation=rotation)
    assert display_rotation(path) == rotation
    got = read_frames(path, [0, 3])
    assert got.shape == (2, 32, 64, 3)
    assert np.array_equal(got, upright[[0, 3]])
    assert (got[:, :4, :4] == 255).all() and (got[:, :4, -4:] == 128).all()  # markers back in their corners


def test_legacy_rotate_tag_is_clockwise(tmp_path):
    upright = _marked()
    stored = np.ascontiguousarray(np.rot90(upright, k=1, axes=(1, 2)))  # shown after turning 90 deg clockwise
    path = tmp_path / "tagged.mkv"
    write_video(path, stored, lossless=True, tags={"rotate": "90"})
    assert display_rotation(path) == 270
    assert np.array_equal(read_frames(path, [1]), upright[[1]])


def test_unrotated_video_keeps_the_fast_path(tmp_path):
    frames = _marked()
    write_video(tmp_path / "v.mkv", frames, lossless=True)
    assert display_rotation(tmp_path / "v.mkv") == 0
    assert np.array_equal(read_frames(tmp_path / "v.mkv", [0, 4]), frames[[0, 4]])


def test_filename_and_annotation_parsing(tmp_path):
    assert parse_clip_filename("-_a-b_c1234_000010_000020.mp4") == ("-_a-b_c1234", 10, 20)
    assert parse_clip_filename("ab_c_000010_000020.mp4") is None  # id is not 11 characters
    assert parse_clip_filename("abcdefghijk_000010_000020.txt") is None
    csv_file = tmp_path / "val.csv"
    csv_file.write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        '"passing American football (in game)",abc_def-123,14.0,24,validate,0\n'
        '"circle, moving left",zzzzzzzzzzz,0,10,validate,1\n'
    )
    rows = read_annotation_csv(csv_file)
    assert [r["label"] for r in rows] == ["passing American football (in game)", "circle, moving left"]
    assert rows[0]["youtube_id"] == "abc_def-123" and rows[0]["split"] == "validate"
    bad = tmp_path / "bad.csv"
    bad.write_text("name,video\nx,y\n")
    with pytest.raises(ConfigError, match="missing columns"):
        read_annotation_csv(bad)
    lst = tmp_path / "train.txt"
    lst.write_text("dir with space/a b.mp4 3\nplain.mp4\n\n")
    assert read_list_file(lst) == [("dir with space/a b.mp4", 3), ("plain.mp4", -1)]


def test_csv_layout_batches(kinetics_root):
    data = dm(kinetics_root, test_clips=2, test_crops=3)
    assert data.layout == "csv" and data.class_names == CLASS_NAMES and data.num_classes == 4
    data.setup("fit")
    data.setup("test")
    raw = next(iter(data.train_dataloader()))
    # workers ship uint8 clips [T, H, W, C] and their augmentation draws; the device step makes floats
    assert raw["video"].shape == (2, 4, 32, 32, 3) and raw["video"].dtype == torch.uint8 and raw["aug"].shape == (2, 11)
    batch = data.on_after_batch_transfer(raw, 0)
    assert batch["video"].shape == (2, 3, 4, 32, 32) and batch["video"].dtype == torch.float32 and "aug" not in batch
    assert batch["resampled"].tolist() == [0, 0]
    raw_test = next(iter(data.test_dataloader()))
    assert raw_test["video"].shape == (2, 6, 4, 32, 32, 3) and raw_test["video"].dtype == torch.uint8
    test = data.on_after_batch_transfer(raw_test, 0)
    assert test["video"].shape == (2, 6, 3, 4, 32, 32) and test["valid"].all()
    views = test["video"][0]
    assert not torch.equal(views[0], views[2])  # left and right crops differ
    assert not torch.equal(views[1], views[4])  # clip 0 and clip 1 (same centre crop) differ
    assert len(data.datasets["test"]) == 4


def test_missing_training_clips_are_skipped_with_one_warning(root, caplog):
    victims = sorted((root / "train").iterdir())[:3]
    for v in victims:
        v.unlink()
    data = dm(root)
    with caplog.at_level(logging.WARNING):
        records = data.records("train")
    assert len(records) == 8 - 3 and data.missing["train"] == 3
    ann = root / "annotations" / "train.csv"
    assert f"{ann} (train): 3 of 8 annotated videos have no file (" in caplog.text
    assert all(v.stem in caplog.text for v in victims)  # named
    assert caplog.text.count("have no file") == 1 and "training skips them" in caplog.text


def test_upper_case_extensions_are_found(root):
    """Was: 'no video file' for every .MP4, and the clips silently left out of the metrics."""
    clips = sorted((root / "val").iterdir())
    clips[0].rename(clips[0].with_suffix(".MP4"))
    clips[1].rename(clips[1].with_suffix(".Mp4"))
    data = dm(root)
    records = data.records("val")
    assert len(records) == 4 and data.missing["val"] == 0
    assert {Path(r.path).suffix for r in records} == {".MP4", ".Mp4", ".mp4"}
    ds = data.build_dataset("val")
    assert all(ds[i]["valid"] for i in range(len(ds)))  # and they decode


def test_label_folders_and_replacement_files_resolve_by_name(root):
    """ActivityNet-crawler style (label folders) under the CSV; a replacement file wins."""
    rows = read_annotation_csv(root / "annotations" / "train.csv")
    for row in rows:
        name = f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}.mp4"
        (root / "train" / row["label"]).mkdir(exist_ok=True)
        (root / "train" / name).rename(root / "train" / row["label"] / name)
    (root / "replacement").mkdir()
    shutil.copy(root / "train" / rows[0]["label"] / name_of(rows[0]), root / "replacement" / name_of(rows[0]))
    records = {r.name: r for r in dm(root).records("train")}
    assert len(records) == 8
    assert "replacement" in records[Path(name_of(rows[0])).stem].path


def name_of(row: dict) -> str:
    return f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}.mp4"


def test_folder_layout_with_normalised_names_and_label_map(kinetics_root, tmp_path):
    root = tmp_path / "folders"
    for split in ("train", "val"):
        for row in read_annotation_csv(kinetics_root / "annotations" / f"{split}.csv"):
            folder = root / ("validate" if split == "val" else split) / row["label"].replace(" ", "_").replace(",", "")
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(kinetics_root / split / name_of(row), folder / name_of(row))
    data = dm(root)
    assert data.layout == "folders"
    (root / "classes.txt").write_text("\n".join(reversed(CLASS_NAMES)) + "\n")
    mapped = dm(root, label_map="classes.txt")
    assert mapped.class_names == list(reversed(CLASS_NAMES))
    val = mapped.records("val")
    truth = {Path(name_of(r)).stem: r["label"] for r in read_annotation_csv(kinetics_root / "annotations" / "val.csv")}
    assert {r.name: mapped.class_names[r.label] for r in val} == truth


def test_list_layout(kinetics_root, tmp_path):
    root = tmp_path / "lists"
    shutil.copytree(kinetics_root / "train", root / "videos dir")
    rows = read_annotation_csv(kinetics_root / "annotations" / "train.csv")
    lines = [f"videos dir/{name_of(r)} {CLASS_NAMES.index(r['label'])}" for r in rows]
    (root / "train_list.txt").write_text("\n".join(lines) + "\n")
    data = dm(root)
    assert data.layout == "list" and data.num_classes == 4
    ds = data.build_dataset("train")
    assert len(ds) == 8 and ds[0]["video"].shape == (4, 32, 32, 3)


def test_bad_roots_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        dm(tmp_path / "absent").num_classes
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"expected annotations/train.csv.*found an empty folder"):
        dm(tmp_path / "empty").num_classes


def corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])  # truncated: the container header survives, frames don't


def test_corrupt_training_video_is_resampled_and_counted(root, caplog):
    data = dm(root)
    ds = data.build_dataset("train")
    bad = 0
    corrupt(Path(ds.records[bad].path))
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING):
        sample = ds[bad]
    assert sample["resampled"] >= 1 and int(sample["index"]) != bad
    assert sample["label"] == ds.records[int(sample["index"])].label
    assert "corrupt training video replaced" in caplog.text
    for r in ds.records:
        corrupt(Path(r.path))
    ds.max_resample = 2
    with pytest.raises(VideoReadError, match="3 videos in a row"):
        ds[0]


def test_corrupt_eval_video_is_flagged_never_replaced(root, caplog):
    data = dm(root, test_clips=2, test_crops=1)
    ds = data.build_dataset("test")
    corrupt(Path(ds.records[1].path))
    with caplog.at_level(logging.WARNING):
        bad, good = ds[1], ds[0]
    assert not bad["valid"] and bad["video"].shape == (2, 4, 32, 32, 3) and torch.count_nonzero(bad["video"]) == 0
    assert int(bad["index"]) == 1 and bad["label"] == ds.records[1].label
    assert good["valid"]
    assert "corrupt evaluation video" in caplog.text


def test_worker_processes_read_videos(kinetics_root):
    data = dm(kinetics_root, num_workers=2, persistent_workers=False)
    data.setup("fit")
    labels = torch.cat([b["label"] for b in data.train_dataloader()])
    assert len(labels) == 8


def test_colour_jitter_settings_are_checked(kinetics_root):
    with pytest.raises(ConfigError, match="data.color_jitter_prob must be in"):
        dm(kinetics_root, color_jitter_prob=1.5)
    with pytest.raises(ConfigError, match=r"data.color_jitter must be \[brightness"):
        dm(kinetics_root, color_jitter=[0.4, 0.4])
    data = _setup(dm(kinetics_root, color_jitter_prob=0.8, grayscale_prob=0.1))
    batch = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    assert batch["video"].shape == (2, 3, 4, 32, 32)


def _setup(data: KineticsDataModule) -> KineticsDataModule:
    data.setup("fit")
    return data


def test_source_is_the_clip_file_relative_to_the_root(kinetics_root):
    from lw_lightning.callbacks.predictions import sample_source

    ds = dm(kinetics_root).build_dataset("test")
    for i, rec in enumerate(ds.records):
        src = sample_source(ds, i)
        assert not src.startswith("/") and (kinetics_root / src).resolve() == Path(rec.path).resolve()
        assert Path(src).stem == rec.name  # <youtube_id>_<start>_<end>: the clip id


def _excel_csv(path: Path) -> None:
    """Rewrite a CSV as Excel's "CSV UTF-8" saves it: a byte-order mark first, CRLF line ends."""
    text = path.read_text().replace("\r\n", "\n").replace("\n", "\r\n")
    path.write_bytes(text.encode("utf-8-sig"))


def test_csv_with_a_byte_order_mark_reads_its_labels(root):
    for split in ("train", "val"):
        _excel_csv(root / "annotations" / f"{split}.csv")
    assert (root / "annotations" / "train.csv").read_bytes().startswith(b"\xef\xbb\xbflabel,")
    truth = {Path(name_of(r)).stem: r["label"] for r in read_annotation_csv(root / "annotations" / "val.csv")}
    assert set(truth.values()) == set(CLASS_NAMES)  # the label column is found, not '\ufefflabel'
    data = dm(root)
    assert data.class_names == CLASS_NAMES
    assert {r.name: data.class_names[r.label] for r in data.records("val")} == truth
    (root / "classes.txt").write_bytes(("\n".join(reversed(CLASS_NAMES)) + "\n").encode("utf-8-sig"))
    mapped = dm(root, label_map="classes.txt")
    assert mapped.class_names == list(reversed(CLASS_NAMES))
    assert {r.name: mapped.class_names[r.label] for r in mapped.records("train")} == {
        Path(name_of(r)).stem: r["label"] for r in read_annotation_csv(root / "annotations" / "train.csv")
    }


def test_every_label_is_checked_against_the_label_map(root):
    ann = root / "annotations" / "train.csv"
    lines = ann.read_text().splitlines()
    lines.insert(3, "juggling balls,abcdefghijk,0,10,train,0")  # line 4 of the file
    ann.write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    with pytest.raises(ConfigError) as err:
        dm(root, label_map="classes.txt").records("train")
    assert str(err.value) == f"{ann}:4: label 'juggling balls' is not in data.label_map {root / 'classes.txt'} (4 classes)"
    lines[3] = ",abcdefghijk,0,10,train,0"  # a training row without a label
    ann.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"^{ann}:4: no label \(every train row needs one\)$"):
        dm(root, label_map="classes.txt").records("train")
    ann.write_text("youtube_id,time_start,time_end,split\nabcdefghijk,0,10,train\n")  # no label column at all
    with pytest.raises(ConfigError, match=r"train.csv has no 'label' column \(header: youtube_id, time_start, time_end, split\)"):
        dm(root, label_map="classes.txt").records("train")


def test_list_file_labels_are_checked_with_their_line(kinetics_root, tmp_path):
    root = tmp_path / "lists"
    shutil.copytree(kinetics_root / "train", root / "videos")
    rows = read_annotation_csv(kinetics_root / "annotations" / "train.csv")
    lines = [f"videos/{name_of(r)} {CLASS_NAMES.index(r['label'])}" for r in rows]
    (root / "train.txt").write_bytes(("\n".join(lines) + "\n").encode("utf-8-sig"))  # a BOM too
    assert len(dm(root).records("train")) == 8  # the first path is not '\ufeffvideos/...'
    (root / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    for bad, needle in (
        (f"videos/{name_of(rows[2])} 4", "label 4 is not a class index 0..3"),
        (f"videos/{name_of(rows[2])} -1", "label -1 is not a class index 0..3"),
        (f"videos/{name_of(rows[2])}", "no label (every train line needs one)"),
    ):
        (root / "train.txt").write_text("\n".join([*lines[:2], bad, *lines[3:]]) + "\n")
        with pytest.raises(ConfigError) as err:
            dm(root, label_map="classes.txt").records("train")
        assert str(err.value) == f"{root / 'train.txt'}:3: {needle}"


def test_cli_trains_on_an_excel_csv_with_a_label_map(root, tmp_path, capsys, monkeypatch):
    """Was: 'error: .../train.csv has no labels', and with data.label_map an IndexError traceback."""
    from lw_lightning.cli import main

    for split in ("train", "val", "test"):
        _excel_csv(root / "annotations" / f"{split}.csv")
    (root / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    common = [
        "experiment=demo_video",
        f"data.root={root}",
        f"output_dir={tmp_path}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "data.batch_size=4",
        "data.eval_batch_size=4",
        "trainer.fast_dev_run=true",
    ]
    assert main(["fit", *common]) == 0
    assert main(["fit", *common, "data.label_map=classes.txt"]) == 0
    (root / "classes.txt").write_text("\n".join(CLASS_NAMES[:3]) + "\n")
    capsys.readouterr()
    assert main(["fit", *common, "data.label_map=classes.txt"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {root / 'annotations' / 'train.csv'}:")
    assert f"is not in data.label_map {root / 'classes.txt'} (3 classes)" in err


def test_missing_eval_clips_are_counted_next_to_the_accuracy(root, tmp_path, capsys, monkeypatch):
    """An annotated test clip without a file: 'test/missing_videos=1.0000' in the printed summary and
    in summary_test.json (was: a log line only, and 'corrupt_videos=0' over fewer clips)."""
    import json

    from lw_lightning.cli import main

    victim = sorted((root / "test").iterdir())[2]
    victim.unlink()
    corrupt(sorted((root / "test").iterdir())[0])
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    args = [
        "experiment=demo_video",
        f"data.root={root}",
        f"output_dir={tmp_path}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "data.eval_batch_size=2",
        "data.test_clips=1",
        "data.test_crops=1",
        "callbacks.images=null",
    ]
    capsys.readouterr()
    assert main(["test", *args]) == 0
    out = capsys.readouterr().out
    assert "test/missing_videos=1.0000" in out and "test/corrupt_videos=1.0000" in out and "test/acc1=" in out
    summary = json.loads(next(tmp_path.rglob("summary_test.json")).read_text())["metrics"]
    assert summary["test/missing_videos"] == 1.0 and summary["test/corrupt_videos"] == 1.0
