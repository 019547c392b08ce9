"""ADE20K DataModule on a tiny ADEChallengeData2016 copy; joint transforms."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from lw_lightning.config import ConfigError
from lw_lightning.data.ade20k import FOLDER, ADE20KDataModule, make_tiny, read_object_info
from lw_lightning.data.transforms import CatMaxRandomCrop, ade20k_train_transform, ceil_to


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("ade"))


def dm(root: Path, **kw) -> ADE20KDataModule:
    kw = {"crop_size": 56, "batch_size": 2, "num_workers": 0, "pin_memory": False, **kw}
    return ADE20KDataModule(root=str(root), **kw)


def raw_label(root: Path, split: str, stem: str) -> np.ndarray:
    return np.array(Image.open(root / FOLDER / "annotations" / split / f"{stem}.png"))


def test_reduce_zero_label_applied_exactly_once(root: Path) -> None:
    d = dm(root)
    d.setup("validate")
    ds = d.datasets["val"]
    for i, (_, ann) in enumerate(ds.pairs):
        raw = np.array(Image.open(ann)).astype(np.int64)
        assert raw.min() == 0 and raw.max() > 1  # the copy has 'other' pixels and real classes
        expected = np.where(raw == 0, 255, raw - 1)
        mask = ds[i]["mask"].numpy()
        np.testing.assert_array_equal(mask, expected)  # twice would turn class 1 into 255


def test_palette_annotations_keep_raw_indices(root: Path) -> None:
    ann = root / FOLDER / "annotations" / "validation" / "ADE_val_00000002.png"
    with Image.open(ann) as im:
        assert im.mode == "P"
    d = dm(root)
    d.setup("validate")
    mask = d.datasets["val"][1]["mask"].numpy()
    raw = np.array(Image.open(ann)).astype(np.int64)
    np.testing.assert_array_equal(mask, np.where(raw == 0, 255, raw - 1))


def test_class_names_from_object_info_with_quirks(root: Path) -> None:
    text = (root / FOLDER / "objectInfo150.txt").read_text()
    assert "\n22 \t" in text and "thing3 \n" in text  # the real file's stray spaces
    names = read_object_info(root / FOLDER / "objectInfo150.txt")
    assert len(names) == 150 and names[0] == "thing1" and names[2] == "thing3" and names[21] == "thing22"
    d = dm(root)
    d.setup("validate")
    assert d.class_names == names and d.num_classes == 150


def test_train_batch_shapes_labels_and_padding(root: Path) -> None:
    # crop larger than some rescaled images: those are padded with 0 (image) and 255 (mask)
    d = dm(root, crop_size=224, scale=[448, 112], batch_size=4)
    d.setup("fit")
    torch.manual_seed(0)
    b = next(iter(d.train_dataloader()))
    assert b["image"].shape == (4, 3, 224, 224) and b["mask"].shape == (4, 224, 224)
    assert b["mask"].dtype == torch.long
    values = set(b["mask"].unique().tolist())
    assert values <= set(range(150)) | {255}
    pad = b["mask"] == 255
    assert pad.any()
    # all-255 rows at the bottom are padding; the image there is exactly 0 (the mean colour)
    full_rows = pad.all(dim=2)
    for i in range(4):
        rows = torch.nonzero(full_rows[i]).flatten()
        if len(rows) and rows[-1] == 223:
            assert b["image"][i, :, -1, :].abs().max() == 0


def test_eval_batches_keep_original_label_size(root: Path) -> None:
    d = dm(root, crop_size=56, eval_batch_size=3)
    d.setup("validate")
    b = next(iter(d.val_dataloader()))
    sizes = [tuple(np.array(Image.open(a)).shape) for _, a in d.datasets["val"].pairs]
    assert [tuple(s) for s in b["label_size"].tolist()] == sizes
    assert b["image"].shape == (3, 3, 56, 56) and b["image_size"].tolist() == [[56, 56]] * 3
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    assert b["mask"].shape == (3, h, w)
    for i, (lh, lw) in enumerate(sizes):  # beyond the label: ignore
        assert (b["mask"][i, lh:, :] == 255).all() and (b["mask"][i, :, lw:] == 255).all()
        assert torch.equal(b["masks"][i], b["mask"][i, :lh, :lw])
    d.setup("fit")
    assert "masks" not in next(iter(d.train_dataloader()))  # training batches are fixed-size crops


def test_eval_short_side_mode_for_sliding_windows(root: Path) -> None:
    d = dm(root, crop_size=56, eval_resize="short_side", eval_batch_size=1)
    d.setup("validate")
    for i, (img, _) in enumerate(d.datasets["val"].pairs):
        w, h = Image.open(img).size
        item = d.datasets["val"][i]
        # short side -> 56 keeping the aspect ratio, long side padded up to a multiple of 14
        long = int(56 * max(h, w) / min(h, w))
        padded = ceil_to(long, 14)
        assert tuple(item["image"].shape[-2:]) == ((56, padded) if w > h else (padded, 56))
        assert tuple(item["label_size"].tolist()) == (h, w)
        if padded > long:  # the padding is the mean colour (0 after normalisation)
            edge = item["image"][..., -1] if w > h else item["image"][..., -1, :]
            assert edge.abs().max() == 0


def _two_class_mask(h: int = 100, w: int = 100) -> tv_tensors.Mask:
    m = torch.full((h, w), 5, dtype=torch.uint8)
    m[:, :20] = 3  # class 3 covers the left fifth only
    m[:10, :] = 255  # some ignore pixels, which the ratio must not count
    return tv_tensors.Mask(m)


def _share_of_balanced_crops(cat_max_ratio: float, n: int = 100) -> float:
    crop = CatMaxRandomCrop(60, cat_max_ratio=cat_max_ratio)
    img = tv_tensors.Image(torch.zeros(3, 100, 100, dtype=torch.uint8))
    mask = _two_class_mask()
    torch.manual_seed(0)
    ok = 0
    for _ in range(n):
        out = crop({"image": img, "mask": mask})["mask"]
        assert out.shape == (60, 60)
        vals = out[out != 255]
        counts = torch.bincount(vals.long())
        counts = counts[counts > 0]
        ok += int(len(counts) > 1 and counts.max() / counts.sum() < 0.75)
    return ok / n


def test_cat_max_ratio_rejects_single_class_crops() -> None:
    # only crops starting within 5 px of the left edge qualify (~12% of plain crops)
    plain, guarded = _share_of_balanced_crops(1.0), _share_of_balanced_crops(0.75)
    assert plain < 0.3 and guarded > 0.55


def test_cat_max_ratio_keeps_last_crop_when_none_qualifies() -> None:
    crop = CatMaxRandomCrop(40, cat_max_ratio=0.75)
    mask = tv_tensors.Mask(torch.full((64, 80), 7, dtype=torch.uint8))
    out = crop({"image": tv_tensors.Image(torch.zeros(3, 64, 80, dtype=torch.uint8)), "mask": mask})
    assert out["mask"].shape == (40, 40) and out["image"].shape == (3, 40, 40)


def test_joint_transform_keeps_image_and_mask_aligned() -> None:
    # an image whose red channel encodes the label: after rescale/crop/flip they must agree
    h, w = 120, 160
    label = torch.zeros(h, w, dtype=torch.uint8)
    label[:, 80:] = 9
    label[60:, :40] = 4
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    image[0] = label * 20
    t = ade20k_train_transform(64, scale=(256, 64), cat_max_ratio=1.0)
    t.transforms = [x for x in t.transforms if type(x).__name__ != "PhotoMetricDistortion"]
    torch.manual_seed(3)
    for _ in range(10):
        out = t({"image": tv_tensors.Image(image), "mask": tv_tensors.Mask(label)})
        red = out["image"][0] * 0.229 + 0.485  # undo the normalisation
        m = out["mask"].long()
        inside = (m != 255) & (red > 0)
        # away from class borders (bilinear mixes 1-2 px there) colour and label match exactly
        interior = inside.clone()
        interior[:, 1:] &= m[:, 1:] == m[:, :-1]
        interior[1:, :] &= m[1:, :] == m[:-1, :]
        interior[:, :-1] &= m[:, :-1] == m[:, 1:]
        interior[:-1, :] &= m[:-1, :] == m[1:, :]
        assert torch.allclose(red[interior] * 255, (m[interior] * 20).float(), atol=2.0)


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "x.txt").write_text("") or p, "x.txt"),
    ],
)
def test_missing_or_wrong_root(tmp_path: Path, make, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        dm(make(tmp_path)).setup("fit")
    msg = str(err.value)
    assert "ADEChallengeData2016" in msg and "annotations/{training,validation}" in msg and needle in msg
    assert "\n" not in msg


def test_unpaired_files_and_rgb_annotations_are_errors(tmp_path: Path, root: Path) -> None:
    copy = tmp_path / "c"
    shutil.copytree(root, copy)
    ann = copy / FOLDER / "annotations" / "training" / "ADE_train_00000003.png"
    ann.unlink()
    with pytest.raises(ConfigError, match="1 image.*no annotation.*ADE_train_00000003.png"):
        dm(copy).setup("fit")
    Image.new("RGB", (150, 180)).save(ann)
    d = dm(copy)
    d.setup("fit")
    with pytest.raises(ConfigError, match="mode RGB.*full ADE20K"):
        d.datasets["train"][2]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a truncated JPEG: header intact, scan data cut


def test_truncated_jpeg_eval_counted_and_excluded_train_skips(tmp_path: Path, root: Path) -> None:
    from lw_lightning.modules.segmentation import Segmenter

    copy = tmp_path / "c"
    shutil.copytree(root, copy)
    truncate(copy / FOLDER / "images" / "validation" / "ADE_val_00000002.jpg")
    truncate(copy / FOLDER / "images" / "training" / "ADE_train_00000001.jpg")
    d = dm(copy, eval_batch_size=3)
    d.setup("fit")
    item = d.datasets["train"][0]
    assert item["index"].item() != 0 and d.datasets["train"].skipped.value == 1
    val = d.datasets["val"]
    flagged = val[1]
    assert not flagged["valid"] and val[0]["valid"] and val.skipped.value == 1
    # the header survived: the placeholder has the original size, and no label pixel counts
    assert tuple(flagged["label_size"].tolist()) == (453, 683) and bool((flagged["mask"] == 255).all())
    batch = next(iter(d.val_dataloader()))
    assert batch["valid"].tolist() == [True, False, True] and len(batch["masks"]) == 3

    torch.manual_seed(0)
    module = Segmenter({"arch": "vit", "preset": "tiny", "img_size": [56, 56], "patch_size": 14}, num_classes=150).eval()
    module._eval_step(batch, "val")
    assert module.val_corrupt.compute().item() == 1
    # mIoU/pixel accuracy saw exactly the two readable images
    labelled = sum(int((m != 255).sum()) for m, ok in zip(batch["masks"], batch["valid"]) if ok)
    assert int(module.val_pixacc.tp.sum() + module.val_pixacc.fn.sum()) == labelled


def test_wrong_size_mask_in_a_worker_is_one_line_exit_2(tmp_path: Path, root: Path, capsys, monkeypatch) -> None:
    from lw_lightning.cli import main

    copy = tmp_path / "c"
    shutil.copytree(root, copy)
    ann = copy / FOLDER / "annotations" / "training" / "ADE_train_00000001.png"
    Image.fromarray(np.ones((10, 12), dtype=np.uint8)).save(ann)  # the image is 300x200
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    argv = [
        "fit",
        "experiment=vit_ade20k_518",
        f"data.root={copy}",
        f"output_dir={tmp_path / 'runs'}",
        f"trainer.default_root_dir={tmp_path / 'runs'}",
        "data.num_workers=1",
        "data.pin_memory=false",
        "data.batch_size=4",
        "data.eval_batch_size=2",
        "data.crop_size=56",
        "data.scale=[224,56]",
        "module.model.preset=tiny",
        "module.model.img_size=[56,56]",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.fast_dev_run=true",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0] == f"error: {ann}: size (10, 12) differs from its image (300, 200)"


def test_train_sample_deterministic_under_seed(root: Path) -> None:
    d = dm(root)
    d.setup("fit")
    ds = d.datasets["train"]
    samples = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        samples.append(ds[1])
    assert torch.equal(samples[0]["image"], samples[1]["image"]) and torch.equal(samples[0]["mask"], samples[1]["mask"])
    assert not torch.equal(samples[0]["image"], samples[2]["image"])


def test_palette_is_the_benchmark_colour_table_and_colorize_blacks_out_ignore():
    from lw_lightning.data.ade20k import colorize, palette

    pal = palette()
    assert pal.shape == (150, 3) and pal.dtype == np.uint8
    # wall, building, sky (classes 0, 1, 2 after reduce_zero_label) and the last class, flag
    assert pal[:3].tolist() == [[120, 120, 120], [180, 120, 120], [6, 230, 230]] and pal[149].tolist() == [92, 0, 255]
    assert len({tuple(c) for c in pal.tolist()}) >= 148  # two repeats in the official table
    rgb = colorize(torch.tensor([[0, 255], [149, 2]]))
    assert rgb.shape == (2, 2, 3) and rgb[0, 1].tolist() == [0, 0, 0] and rgb[1, 0].tolist() == [92, 0, 255]


def test_upper_case_extensions_pair_up(tmp_path: Path, root: Path) -> None:
    copy = tmp_path / "c"
    shutil.copytree(root, copy)
    base = copy / FOLDER
    (base / "images/validation/ADE_val_00000001.jpg").rename(base / "images/validation/ADE_val_00000001.JPG")
    (base / "annotations/validation/ADE_val_00000002.png").rename(base / "annotations/validation/ADE_val_00000002.PNG")
    d = dm(copy)
    d.setup("validate")
    ds = d.datasets["val"]
    assert len(ds) == 3 and ds.missing == 0 and all(ds[i]["valid"] for i in range(3))


def test_exif_orientation_turns_the_image_and_its_mask_together(tmp_path: Path, root: Path) -> None:
    """A val JPEG stored sideways with Orientation=6 ("turn 90° clockwise"), its annotation drawn on
    the stored pixels (as ADE20K's were): both come out upright and still on the same pixels."""
    copy = tmp_path / "c"
    shutil.copytree(root, copy)
    stored = np.full((40, 60, 3), 10, dtype=np.uint8)
    stored[:, :30] = 240  # stored left half bright ...
    labels = np.full((40, 60), 2, dtype=np.uint8)
    labels[:, :30] = 1  # ... and class 1 (0 after reduce_zero_label), the right half class 2 (1)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(copy / FOLDER / "images/validation/ADE_val_00000001.jpg", exif=exif, quality=95)
    Image.fromarray(labels).save(copy / FOLDER / "annotations/validation/ADE_val_00000001.png")
    d = dm(copy)
    d.setup("validate")
    item = d.datasets["val"][0]
    mask = item["mask"]  # evaluation keeps the original-resolution label
    assert item["valid"] and tuple(mask.shape) == (60, 40)  # upright: portrait
    # turned clockwise, the stored left half is the top half: bright, class 0; the bottom: dark, class 1
    assert bool((mask[:30] == 0).all()) and bool((mask[30:] == 1).all())
    image = item["image"]  # resized to the 56x56 crop, normalised
    assert image[:, :26].mean() > 1.0 and image[:, 30:].mean() < -1.0
