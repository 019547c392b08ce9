"""Swedish Traffic Signs: annotation grammar, 4-class filter, splits, transforms, policy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from lw_lightning.config import ConfigError
from lw_lightning.data.synthetic_signs import CLASS_NAMES
from lw_lightning.data.traffic_signs import (
    TrafficSignsDataModule,
    expected_tiny_labels,
    load_set,
    make_tiny,
    parse_annotations,
    parse_number,
    speed_limit_label,
    stratified_split,
)

# lines in the file's grammar, each with the quirk it exercises and the expected class (None: dropped)
LINES = [
    ("a.jpg:", "EMPTY"),  # no signs
    ("b.jpg:MISC_SIGNS;", "EMPTY"),  # only MISC_SIGNS
    ("c.jpg:VISIBLE, 862.03, 339.32, 824.28, 301.21, PROHIBITORY, 70_SIGN;MISC_SIGNS;", "70_SIGN"),
    ("d.jpg:BLURRED, 500.5, 300.5, 450.5, 250.5, PROHIBITORY, 70_SIGN;", None),  # not visible
    ("e.jpg:VISIBLE, 500, 300, 450, 250, PROHIBITORY, 90_SIGN;", None),  # other speed limit
    ("f.jpg:VISIBLE, 500, 300, 450, 250, OTHER, PEDESTRIAN_CROSSING;MISC_SIGNS;", None),  # other sign
    # two visible limits: the larger (80, 60x60) wins over the first in file order (50, 20x20)
    ("g.jpg:VISIBLE, 120, 120, 100, 100, PROHIBITORY, 50_SIGN;VISIBLE, 760, 360, 700, 300, PROHIBITORY, 80_SIGN;", "80_SIGN"),
    # visibility before area: a large occluded 80 loses to a small visible 50
    ("h.jpg:OCCLUDED, 900, 500, 700, 300, PROHIBITORY, 80_SIGN;VISIBLE, 120, 120, 100, 100, PROHIBITORY, 50_SIGN;", "50_SIGN"),
    # the top limit is blurred although a smaller visible one exists: dropped (ATS sorts then checks)
    ("i.jpg:BLURRED, 900, 500, 700, 300, PROHIBITORY, 70_SIGN;SIDE_ROAD, 120, 120, 100, 100, PROHIBITORY, 50_SIGN;", None),
    ("j.jpg:VISIBLE, 1053.85l, 420.1, 1001.2, 380.0, PROHIBITORY, 50_SIGN;", "50_SIGN"),  # junk after a number
    ("k.jpg:VISIBLE, 100, 100, 80, 80, PROHIBITORY, 30_SIGN;VISIBLE, 60, 60, 50, 50, PROHIBITORY, 80_SIGN;", "80_SIGN"),
    ("l.jpg:;;MISC_SIGNS;;", "EMPTY"),  # empty segments
]


def write_annotations(path: Path, lines: list[str], eol: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((eol.join(lines) + eol + eol).encode())  # a blank line at the end too
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("sts"), size=(120, 160), n_set1=24, n_set2=13)


def dm(root: Path, **kw) -> TrafficSignsDataModule:
    kw = {"batch_size": 4, "num_workers": 0, "pin_memory": False, **kw}
    return TrafficSignsDataModule(root=str(root), **kw)


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_grammar_lower_right_first_and_quirks(tmp_path: Path, eol: str) -> None:
    ann = write_annotations(tmp_path / "annotations.txt", [line for line, _ in LINES], eol)
    entries = parse_annotations(ann)
    assert [e.filename for e in entries] == [line.split(":")[0] for line, _ in LINES]
    c = entries[2].signs
    assert len(c) == 1  # MISC_SIGNS dropped
    assert c[0].box == (824.28, 301.21, 862.03, 339.32) and c[0].name == "70_SIGN" and c[0].sign_type == "PROHIBITORY"
    assert c[0].area == pytest.approx((862.03 - 824.28) * (339.32 - 301.21))
    assert entries[9].signs[0].lrx == 1053.85
    assert entries[11].signs == () and entries[0].signs == () and entries[1].signs == ()


def test_parse_number_strips_trailing_junk() -> None:
    assert parse_number("1053.85l") == 1053.85 and parse_number(" 12.5ab ") == 12.5 and parse_number("7") == 7.0
    with pytest.raises(ValueError):
        parse_number("abc")


def test_four_class_filter(tmp_path: Path) -> None:
    entries = parse_annotations(write_annotations(tmp_path / "annotations.txt", [line for line, _ in LINES]))
    got = []
    for e in entries:
        decided = speed_limit_label(e.signs)
        got.append(None if decided is None else CLASS_NAMES[decided[0]])
    assert got == [label for _, label in LINES]
    _label, sign = speed_limit_label(entries[6].signs)  # type: ignore[misc]
    assert sign is not None and sign.box == (700, 300, 760, 360)


def test_malformed_lines_name_file_and_line(tmp_path: Path) -> None:
    ann = write_annotations(tmp_path / "annotations.txt", ["a.jpg:", "b.jpg:FOGGY, 1, 2, 0, 0, PROHIBITORY, 50_SIGN;"])
    with pytest.raises(ConfigError, match=r"annotations.txt:2: unknown visibility 'FOGGY'"):
        parse_annotations(ann)
    write_annotations(ann, ["a.jpg:VISIBLE, 1, 2, 0, PROHIBITORY, 50_SIGN;"])
    with pytest.raises(ConfigError, match=r":1: a sign needs 7 fields"):
        parse_annotations(ann)
    write_annotations(ann, ["no colon here"])
    with pytest.raises(ConfigError, match=r":1: expected '<image file>:<signs>'"):
        parse_annotations(ann)


@pytest.mark.parametrize("set_name, n", [("Set1", 24), ("Set2", 13)])
def test_tiny_copy_layouts_and_labels(root: Path, set_name: str, n: int) -> None:
    # Set1 is flat with LF endings; Set2 keeps images in Set2/Set2Part0/ and has CRLF endings
    raw = (root / set_name / "annotations.txt").read_bytes()
    assert (b"\r\n" in raw) == (set_name == "Set2") and b"l, " in raw
    samples = load_set(root, set_name)
    expected = [CLASS_NAMES.index(x) for x in expected_tiny_labels(n) if x is not None]
    assert [s.label for s in samples] == expected
    assert all(s.path.parent.name == ("Set2Part0" if set_name == "Set2" else "Set1") for s in samples)
    assert all((s.box is None) == (s.label == 0) for s in samples)
    assert all(s.box[0] < s.box[2] and s.box[1] < s.box[3] for s in samples if s.box)


def test_splits_stratified_seeded_and_disjoint(root: Path) -> None:
    d = dm(root, val_fraction=0.25, split_seed=0)
    train, val, test = (d.split_samples(s) for s in ("train", "val", "test"))
    set1 = load_set(root, "Set1")
    assert {s.path for s in train} | {s.path for s in val} == {s.path for s in set1}
    assert not {s.path for s in train} & {s.path for s in val}
    assert {s.label for s in val} == {0, 1, 2, 3}  # every class is represented
    assert [s.path for s in test] == [s.path for s in load_set(root, "Set2")]
    again = dm(root, val_fraction=0.25, split_seed=0, seed=123).split_samples("val")
    assert [s.path for s in again] == [s.path for s in val]  # the training seed does not move it
    other = dm(root, val_fraction=0.25, split_seed=1).split_samples("val")
    assert [s.path for s in other] != [s.path for s in val]
    assert [s.path for s in dm(root, val_fraction=0.0).split_samples("val")] == [s.path for s in test]


def test_stratified_split_counts() -> None:
    labels = [0] * 10 + [1] * 4 + [2] * 1
    train, val = stratified_split(labels, 0.2, seed=0)
    assert sorted(train + val) == list(range(15))
    assert [labels[i] for i in val].count(0) == 2 and [labels[i] for i in val].count(1) == 1
    assert 14 not in val  # a class with one image stays in train


def test_class_weights_balance_the_train_split(root: Path) -> None:
    d = dm(root, val_fraction=0.0)
    labels = [s.label for s in d.split_samples("train")]
    w = d.class_weights
    for c in range(4):
        assert w[c] == pytest.approx(len(labels) / (4 * labels.count(c)))


def test_native_resolution_is_padded_to_patch_multiple(root: Path) -> None:
    d = dm(root, val_fraction=0.0)
    d.setup("validate")
    ds = d.datasets["val"]
    i = next(i for i, s in enumerate(ds.samples) if s.box is not None)
    item = ds[i]
    assert item["image"].shape == (3, 126, 168)  # 120x160 -> multiples of 14
    assert item["image"][:, 120:, :].abs().max() == 0 and item["image"][:, :, 160:].abs().max() == 0
    assert item["box"].tolist() == pytest.approx(list(ds.samples[i].box), abs=1e-4)


def test_resized_input_scales_the_box(root: Path) -> None:
    d = dm(root, image_size=[56, 84], val_fraction=0.0)
    d.setup("test")
    ds = d.datasets["test"]
    for i, s in enumerate(ds.samples):
        item = ds[i]
        assert item["image"].shape == (3, 56, 84)
        if s.box is None:
            assert item["box"].tolist() == [-1.0] * 4 and item["label"].item() == 0
        else:
            x0, y0, x1, y1 = s.box
            assert item["box"].tolist() == pytest.approx([x0 * 84 / 160, y0 * 56 / 120, x1 * 84 / 160, y1 * 56 / 120], abs=1e-3)


def test_train_augmentation_translates_box_with_image(root: Path) -> None:
    d = dm(root, image_size=[120, 160], val_fraction=0.0, color_jitter=0.0, translate_px=400.0)
    d.setup("fit")
    ds = d.datasets["train"]
    i = next(i for i, s in enumerate(ds.samples) if s.box is not None)
    torch.manual_seed(0)
    moved = [ds[i]["box"] for _ in range(8)]
    ref = torch.tensor(ds.samples[i].box)
    assert any((b - ref).abs().max() > 1 for b in moved)
    inside = [b for b in moved if b[0] > 0 and b[1] > 0 and b[2] < 160 and b[3] < 120]
    assert inside
    for b in inside:  # a pure translation: both corners move by the same (dx, dy)
        shift = b - ref
        assert shift[0] == pytest.approx(shift[2].item(), abs=1e-3) and shift[1] == pytest.approx(shift[3].item(), abs=1e-3)


def test_batches(root: Path) -> None:
    d = dm(root, image_size=56)
    d.setup("fit")
    b = next(iter(d.train_dataloader()))
    assert b["image"].shape == (4, 3, 56, 56) and b["box"].shape == (4, 4) and b["box"].dtype == torch.float32
    assert b["label"].dtype == torch.long and d.num_classes == 4 and d.class_names == CLASS_NAMES


def test_missing_root_and_missing_images(tmp_path: Path, root: Path) -> None:
    with pytest.raises(ConfigError) as err:
        dm(tmp_path / "none").setup("fit")
    assert "Set1/annotations.txt" in str(err.value) and "does not exist" in str(err.value)
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "Set1").mkdir()
    with pytest.raises(ConfigError, match="found entries Set1/"):
        dm(tmp_path / "only").setup("fit")
    copy = tmp_path / "c"
    shutil.copytree(root, copy)
    (copy / "Set2" / "Set2Part0" / "1277320000Image000002.jpg").unlink()
    with pytest.raises(ConfigError, match="1 kept image.*missing.*1277320000Image000002.jpg"):
        dm(copy).setup("test")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a truncated JPEG: header intact, scan data cut


def test_unreadable_image_train_skips_eval_counts(tmp_path: Path, root: Path) -> None:
    copy = tmp_path / "c"
    shutil.copytree(root, copy)
    truncate(copy / "Set1" / "1277310000Image000000.jpg")
    truncate(copy / "Set2" / "Set2Part0" / "1277320000Image000000.jpg")
    (copy / "Set2" / "Set2Part0" / "1277320000Image000001.jpg").write_bytes(b"")  # no header either
    d = dm(copy, val_fraction=0.0)
    d.setup("fit")
    d.setup("test")
    train = d.datasets["train"]
    assert train[0]["index"].item() != 0 and train.skipped.value == 1
    test = d.datasets["test"]
    good = test[2]
    for i in (0, 1):  # flagged, never replaced, and shaped like a readable sample (native: padded)
        bad = test[i]
        assert not bad["valid"] and bad["index"].item() == i and bad["label"].item() == test.samples[i].label
        assert bad["image"].shape == good["image"].shape == (3, 126, 168)
    assert good["valid"] and test.skipped.value == 2
    batch = next(iter(d.test_dataloader()))
    assert batch["valid"].tolist() == [False, False, True, True]


def test_predictions_name_files_relative_to_the_root(root: Path) -> None:
    d = dm(root)
    d.setup("predict")
    ds = d.datasets["predict"]
    assert ds.source(0) == "Set2/Set2Part0/1277320000Image000000.jpg" and (root / ds.source(0)).is_file()


def test_train_transform_deterministic_under_seed(root: Path) -> None:
    d = dm(root, image_size=56)
    d.setup("fit")
    ds = d.datasets["train"]
    torch.manual_seed(5)
    a = ds[3]["image"]
    torch.manual_seed(5)
    b = ds[3]["image"]
    torch.manual_seed(6)
    c = ds[3]["image"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_annotations_with_a_byte_order_mark(tmp_path: Path, root: Path) -> None:
    """A BOM (an editor's "UTF-8 with BOM") was read into the first image's name, which then
    went missing: 'error: ... 1 kept image(s) are missing'."""
    copy = tmp_path / "c"
    shutil.copytree(root, copy)
    ann = copy / "Set1" / "annotations.txt"
    ann.write_bytes(b"\xef\xbb\xbf" + ann.read_bytes())
    assert [s.path for s in load_set(copy, "Set1")] == [copy / s.path.relative_to(root) for s in load_set(root, "Set1")]


def test_image_named_with_an_upper_case_extension_is_found(tmp_path: Path, root: Path) -> None:
    """annotations.txt says x.jpg, the file is x.JPG (was: 'error: ... 1 kept image(s) are missing')."""
    copy = tmp_path / "c"
    shutil.copytree(root, copy)
    image = copy / "Set2" / "Set2Part0" / "1277320000Image000002.jpg"
    image.rename(image.with_suffix(".JPG"))
    samples = load_set(copy, "Set2")
    assert len(samples) == len(load_set(root, "Set2")) and image.with_suffix(".JPG") in [s.path for s in samples]
    d = dm(copy)
    d.setup("test")
    assert d.datasets["test"].missing == 0  # a kept image without a file is an error (see above), never left out


@pytest.mark.parametrize("orientation", range(2, 9))
def test_turn_box_follows_every_exif_orientation(tmp_path: Path, orientation: int) -> None:
    """A white box drawn on the stored pixels of a tagged (lossless) file is where turn_box says,
    once the image is turned upright."""
    import numpy as np
    from PIL import Image

    from lw_lightning.data.images import load_upright, turn_box

    stored = np.zeros((30, 50, 3), dtype=np.uint8)
    box = (7.0, 4.0, 19.0, 10.0)  # x0, y0, x1, y1: pixels 7..18 x 4..9
    stored[4:10, 7:19] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "s.png", exif=exif)
    upright, turn = load_upright(tmp_path / "s.png")
    assert turn is not None
    ys, xs = np.nonzero(np.asarray(upright)[..., 0])
    assert turn_box(box, turn, upright.size) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_exif_orientation_turns_the_image_and_its_box_together(tmp_path: Path, root: Path) -> None:
    """A Set2 image re-saved with Orientation=6: it is fed upright (portrait) and the deciding sign's
    box, annotated on the stored pixels, is turned with it onto the same sign."""
    import numpy as np
    from PIL import Image

    copy = tmp_path / "c"
    shutil.copytree(root, copy)
    plain = dm(root, val_fraction=0.0)
    plain.setup("test")
    i = next(i for i, s in enumerate(plain.datasets["test"].samples) if s.box is not None)
    path = copy / plain.datasets["test"].samples[i].path.relative_to(root)
    with Image.open(path) as im:
        stored = np.asarray(im.convert("RGB"))
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90° clockwise to show"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    d = dm(copy, val_fraction=0.0, image_size=[160, 120])  # the upright (portrait) size: no resampling
    d.setup("test")
    ds = d.datasets["test"]
    item = ds[i]
    x0, y0, x1, y1 = ds.samples[i].box  # on the stored 160x120 pixels
    assert item["box"].tolist() == pytest.approx([120 - y1, x0, 120 - y0, x1], abs=1e-3)
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    shown = ((item["image"] * std + mean) * 255).permute(1, 2, 0).numpy()
    upright = np.rot90(stored, k=-1).astype(np.float64)  # the stored pixels turned clockwise
    assert np.abs(shown - upright).mean() < 4  # the same picture, upright (JPEG re-encoding aside)
    r0, r1, c0, c1 = round(y0), round(y1), round(x0), round(x1)
    sign = np.rot90(stored[r0:r1, c0:c1], k=-1).astype(np.float64)  # the annotated pixels, turned
    assert np.abs(shown[c0:c1, 120 - r1 : 120 - r0] - sign).mean() < 6  # are inside the turned box
