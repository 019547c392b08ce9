"""ImageNet DataModule on tiny copies written in the three real layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lw_lightning.config import ConfigError
from lw_lightning.data.imagenet import (
    TINY_WNIDS,
    ImageNetDataModule,
    canonical_wnids,
    find_layout,
    list_samples,
    make_tiny,
    read_devkit_meta,
)
from lw_lightning.data.images import UnreadableImageError, load_rgb

# the real ImageNet-1k class indices of the tiny copy's wnids (tench, goldfish, golden retriever, toilet tissue)
REAL_INDEX = {"n01440764": 0, "n01443537": 1, "n02099601": 207, "n15075141": 999}


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("imagenet")
    return {layout: make_tiny(base / layout, layout) for layout in ("folders", "kaggle", "devkit")}


def dm(root: Path, **kw) -> ImageNetDataModule:
    kw = {"image_size": 28, "batch_size": 4, "num_workers": 0, "pin_memory": False, **kw}
    return ImageNetDataModule(root=str(root), **kw)


def expected_val_label(path: Path) -> int:
    number = int(path.stem.split("_")[-1])
    return REAL_INDEX[TINY_WNIDS[(number - 1) % len(TINY_WNIDS)]]


def test_canonical_list_is_sorted_1000() -> None:
    wnids = canonical_wnids()
    assert len(wnids) == 1000 and wnids == sorted(wnids) and wnids[0] == "n01440764"


@pytest.mark.parametrize("layout", ["folders", "kaggle", "devkit"])
def test_partial_copy_keeps_real_class_indices(copies: dict[str, Path], layout: str) -> None:
    d = dm(copies[layout])
    d.setup("fit")
    assert d.num_classes == 1000 and len(d.class_names) == 1000
    train = d.datasets["train"].samples
    assert {p.parent.name: y for p, y in train} == REAL_INDEX  # not re-numbered 0..3
    val = d.datasets["val"].samples
    assert len(val) == 8
    assert [y for _, y in val] == [expected_val_label(p) for p, _ in val]


def test_class_names_from_synset_mapping(copies: dict[str, Path]) -> None:
    d = dm(copies["kaggle"])
    d.setup("validate")
    assert d.class_names[0] == "tench, Tinca tinca" and d.class_names[999].startswith("toilet tissue")


def test_devkit_ids_follow_meta_mat_not_sorted_order(copies: dict[str, Path]) -> None:
    root = copies["devkit"]
    gt = (root / "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt").read_text().split()
    layout = find_layout(root)
    assert layout.val_flat and layout.devkit is not None and layout.val_solution is None
    samples, _ = list_samples(layout, "val", {w: i for i, w in enumerate(canonical_wnids())})
    labels = [y for _, y in samples]
    naive = [int(gt[int(p.stem[-8:]) - 1]) - 1 for p, _ in samples]  # "label = gt - 1": the trap
    assert labels == [expected_val_label(p) for p, _ in samples]
    assert labels != naive


def test_flat_val_labels_by_file_number_not_position(tmp_path: Path, copies: dict[str, Path]) -> None:
    for layout in ("kaggle", "devkit"):
        root = tmp_path / layout
        shutil.copytree(copies[layout], root)
        val = root / ("ILSVRC/Data/CLS-LOC/val" if layout == "kaggle" else "val")
        (val / "ILSVRC2012_val_00000001.JPEG").unlink()  # a partial copy: numbering has a hole
        d = dm(root)
        d.setup("validate")
        samples = d.datasets["val"].samples
        assert len(samples) == 7
        assert [y for _, y in samples] == [expected_val_label(p) for p, _ in samples]


def test_non_rgb_files_decode_to_rgb(copies: dict[str, Path]) -> None:
    folder = copies["folders"] / "train" / TINY_WNIDS[0]
    files = sorted(folder.iterdir())
    with Image.open(files[0]) as im:
        assert im.mode == "CMYK" and im.format == "JPEG"
    assert files[1].suffix == ".JPEG" and files[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(files[2]) as im:
        assert im.mode == "L"
    for f in files[:3]:
        img = load_rgb(f)
        assert img.mode == "RGB" and np.asarray(img).shape[2] == 3
    d = dm(copies["folders"])
    d.setup("fit")
    for i in range(3):  # the dataset serves them like any other image
        assert d.datasets["train"][i]["image"].shape == (3, 28, 28)


def test_batches_are_dicts_with_fixed_shapes(copies: dict[str, Path]) -> None:
    d = dm(copies["folders"], image_size=[28, 42])
    d.setup("fit")
    b = next(iter(d.train_dataloader()))
    assert b["image"].shape == (4, 3, 28, 42) and b["image"].dtype == torch.float32
    assert b["label"].dtype == torch.long and b["index"].shape == (4,)
    v = next(iter(d.val_dataloader()))
    assert v["image"].shape == (4, 3, 28, 42)


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: p / "nope", "does not exist"),
        (lambda p: p, "empty folder"),
        (lambda p: (p / "images").mkdir() or p, "images/"),
    ],
)
def test_missing_or_wrong_root_is_one_clear_error(tmp_path: Path, make, needle: str) -> None:
    root = make(tmp_path)
    with pytest.raises(ConfigError) as err:
        dm(root).setup("fit")
    msg = str(err.value)
    assert "\n" not in msg and "train/<wnid>" in msg and "LOC_val_solution.csv" in msg and needle in msg


def test_flat_val_without_labels_is_an_error(tmp_path: Path, copies: dict[str, Path]) -> None:
    root = tmp_path / "c"
    shutil.copytree(copies["devkit"], root)
    shutil.rmtree(root / "ILSVRC2012_devkit_t12")
    with pytest.raises(ConfigError, match="flat .* no labels"):
        dm(root).setup("validate")


def test_unknown_wnid_folder_is_an_error(tmp_path: Path, copies: dict[str, Path]) -> None:
    root = tmp_path / "c"
    shutil.copytree(copies["folders"], root)
    shutil.copytree(root / "train" / TINY_WNIDS[0], root / "train" / "n99999999")
    with pytest.raises(ConfigError, match="n99999999.*not one of the 1000"):
        dm(root).setup("fit")


def truncate(path: Path) -> None:
    """Cut a real JPEG in half: the header (and so its size) survives, the scan data does not."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_unreadable_image_train_skips_eval_counts(tmp_path: Path, copies: dict[str, Path]) -> None:
    root = tmp_path / "c"
    shutil.copytree(copies["folders"], root)
    bad = root / "train" / TINY_WNIDS[1] / f"{TINY_WNIDS[1]}_1000.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    badval = next((root / "val" / TINY_WNIDS[2]).iterdir())
    badval.write_bytes(b"")  # not even a header: the placeholder takes another file's size
    d = dm(root, max_retries=3)
    d.setup("fit")
    train = d.datasets["train"]
    i = [p for p, _ in train.samples].index(bad)
    item = train[i]
    assert item["index"].item() != i and train.skipped.value == 1
    assert train[i]["index"].item() == item["index"].item()  # seeded replacement
    val = d.datasets["val"]
    j = [p for p, _ in val.samples].index(badval)
    flagged = val[j]
    assert not flagged["valid"] and flagged["index"].item() == j and val.skipped.value == 1
    assert flagged["image"].shape == val[0]["image"].shape and val[0]["valid"]


def test_truncated_jpeg_train_replaced_val_counted_and_excluded(tmp_path: Path, copies: dict[str, Path], caplog) -> None:
    from pytorch_lightning import Trainer

    from lw_lightning.modules.classification import ImageClassifier

    root = tmp_path / "c"
    shutil.copytree(copies["folders"], root)
    bad_train = root / "train" / TINY_WNIDS[3] / f"{TINY_WNIDS[3]}_1001.JPEG"
    bad_val = root / "val" / TINY_WNIDS[0] / "ILSVRC2012_val_00000005.JPEG"
    truncate(bad_train)
    truncate(bad_val)
    with pytest.raises(UnreadableImageError, match="truncated"):
        load_rgb(bad_val)
    d = dm(root, image_size=28, eval_batch_size=8)
    d.setup("fit")
    train, val = d.datasets["train"], d.datasets["val"]
    i = [p for p, _ in train.samples].index(bad_train)
    assert train[i]["index"].item() != i and train.skipped.value == 1
    j = [p for p, _ in val.samples].index(bad_val)
    assert not val[j]["valid"] and all(val[k]["valid"] for k in range(len(val)) if k != j)
    assert val.skipped.value == 1

    torch.manual_seed(0)
    module = ImageClassifier({"arch": "vit", "preset": "tiny", "img_size": [28, 28], "patch_size": 14}, num_classes=1000).eval()
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    with caplog.at_level("WARNING"):
        metrics = trainer.validate(
            module,
            datamodule=ImageNetDataModule(
                root=str(root), image_size=28, batch_size=4, eval_batch_size=8, num_workers=0, pin_memory=False
            ),
            verbose=False,
        )[0]
    assert metrics["val/corrupt_images"] == 1.0
    assert "unreadable evaluation image" in caplog.text and bad_val.name in caplog.text
    # accuracy over exactly the 7 readable images (top-5 of 1000 classes: compare with our own count)
    good = [val[k] for k in range(len(val)) if k != j]
    with torch.no_grad():
        logits = module(torch.stack([g["image"] for g in good]))[0]
    labels = torch.stack([g["label"] for g in good])
    expected = (logits.topk(5, -1).indices == labels[:, None]).any(-1).float().mean().item()
    assert metrics["val/acc5"] == pytest.approx(expected)


def test_16bit_png_decodes_scaled_to_8bit(tmp_path: Path, copies: dict[str, Path]) -> None:
    # a horizontal gradient over the whole 16-bit range: column k holds 257 * k, i.e. k in 8 bits
    gradient = (np.arange(256, dtype=np.uint16) * 257)[None, :].repeat(6, axis=0)
    path = tmp_path / "g16.png"
    Image.fromarray(gradient).save(path)
    assert path.read_bytes()[24] == 16  # the PNG header's bit depth: really a 16-bit file
    with Image.open(path) as im:
        assert im.mode == "I;16" and (np.array(im.convert("RGB"))[:, 1:] == 255).all()  # plain convert clips: white
    rgb = np.asarray(load_rgb(path))
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 256, 3)
    assert np.array_equal(rgb[..., 0], np.arange(256, dtype=np.uint8)[None, :].repeat(6, axis=0))
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])  # grayscale -> RGB
    # mode "I" (how older Pillow opens 16-bit PNGs) is scaled the same way, with rounding
    wide = Image.fromarray(np.array([[0, 128, 32768, 65535, 70000]], dtype=np.int32))
    assert wide.mode == "I"
    from lw_lightning.data.images import to_rgb

    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == [0, 0, 128, 255, 255]
    # through the dataset: a 16-bit PNG named .JPEG in a class folder (ImageNet hides PNGs that way)
    root = tmp_path / "c"
    shutil.copytree(copies["folders"], root)
    target = root / "val" / TINY_WNIDS[1] / "ILSVRC2012_val_00000002.JPEG"
    Image.fromarray(np.full((40, 40), 100 * 257, dtype=np.uint16)).save(target, format="PNG")
    d = dm(root, image_size=28)
    d.setup("validate")
    val = d.datasets["val"]
    item = val[[p for p, _ in val.samples].index(target)]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    pixel = item["image"][:, 14, 14] * std + mean  # undo the normalisation: 100/255 in every channel
    assert torch.allclose(pixel, torch.full((3,), 100 / 255), atol=1e-3)


def test_predictions_csv_names_the_image_file(tmp_path: Path, copies: dict[str, Path]) -> None:
    import csv

    from pytorch_lightning import Trainer

    from lw_lightning.callbacks.predictions import PredictionWriter
    from lw_lightning.modules.classification import ImageClassifier

    root = tmp_path / "c"
    shutil.copytree(copies["kaggle"], root)
    bad = root / "ILSVRC" / "Data" / "CLS-LOC" / "val" / "ILSVRC2012_val_00000003.JPEG"
    truncate(bad)
    module = ImageClassifier({"arch": "vit", "preset": "tiny", "img_size": [28, 28], "patch_size": 14}, num_classes=1000)
    writer = PredictionWriter(output_dir=str(tmp_path / "out"))
    trainer = Trainer(accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False, enable_model_summary=False)
    data = dm(root, image_size=28, eval_batch_size=3)
    trainer.predict(module, datamodule=data, return_predictions=False)
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    samples = data.datasets["predict"].samples
    assert len(rows) == len(samples) == 8
    for row, (path, label) in zip(rows, samples):
        assert row["source"] == path.relative_to(root).as_posix()
        assert row["source"].startswith("ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_") and (root / row["source"]).is_file()
        assert int(row["label"]) == label
    flagged = next(r for r in rows if r["source"].endswith(bad.name))
    assert int(flagged["pred"]) == -1 and float(flagged["score"]) == 0.0
    assert all(int(r["pred"]) >= 0 for r in rows if r is not flagged)


def test_train_gives_up_after_bounded_retries(tmp_path: Path, copies: dict[str, Path]) -> None:
    root = tmp_path / "c"
    shutil.copytree(copies["folders"], root)
    for f in (root / "train").rglob("*.JPEG"):
        f.write_bytes(b"garbage")
    d = dm(root, max_retries=2)
    d.setup("fit")
    with pytest.raises(UnreadableImageError, match="3 unreadable training images in a row"):
        d.datasets["train"][0]
    assert d.datasets["train"].skipped.value == 3


def test_seeded_loading_is_deterministic(copies: dict[str, Path]) -> None:
    def first_batch(seed: int, workers: int) -> dict[str, torch.Tensor]:
        d = dm(copies["folders"], seed=seed, num_workers=workers, persistent_workers=False)
        d.setup("fit")
        return next(iter(d.train_dataloader()))

    a, b, c = first_batch(0, 2), first_batch(0, 2), first_batch(1, 2)
    assert torch.equal(a["index"], b["index"]) and torch.equal(a["image"], b["image"])
    assert not torch.equal(a["image"], c["image"])


def test_eval_transform_resize_then_center_crop(copies: dict[str, Path]) -> None:
    d = dm(copies["folders"], image_size=224)
    d.setup("validate")
    ts = d.datasets["val"].transform.transforms
    assert ts[0].size == 256 and tuple(ts[1].size) == (224, 224)  # 224 / 0.875 = 256 short side


def test_mixup_gives_soft_targets_and_needs_even_batches(copies: dict[str, Path]) -> None:
    class FakeTrainer:
        training = True
        world_size, global_rank = 1, 0

    d = dm(copies["folders"], mixup=0.8, cutmix=1.0)
    d.trainer = FakeTrainer()  # type: ignore[assignment]
    d.setup("fit")
    batch = d.on_after_batch_transfer(next(iter(d.train_dataloader())), 0)
    assert batch["target"].shape == (4, 1000)
    assert torch.allclose(batch["target"].sum(1), torch.ones(4))
    FakeTrainer.training = False
    plain = d.on_after_batch_transfer(next(iter(d.val_dataloader())), 0)
    assert "target" not in plain
    with pytest.raises(ConfigError, match="even"):
        dm(copies["folders"], mixup=0.8, batch_size=3).setup("fit")


def test_tiny_meta_mat_has_the_devkit_layout(copies: dict[str, Path]) -> None:
    import scipy.io

    meta = copies["devkit"] / "ILSVRC2012_devkit_t12" / "data" / "meta.mat"
    assert scipy.io.whosmat(meta) == [("synsets", (1003, 1), "struct")]  # 1000 leaves + 3 groups, N x 1
    raw = scipy.io.loadmat(meta)["synsets"]
    assert raw.dtype.names == (
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    )
    assert raw[0, 0]["ILSVRC2012_ID"].dtype == np.float64  # MATLAB doubles, as in the real file
    # read the way torchvision's ImageNet parses the devkit: rows with num_children == 0, fields by position
    rows = scipy.io.loadmat(meta, squeeze_me=True)["synsets"]
    leaves = [r for r in rows if r[4] == 0]
    assert len(leaves) == 1000
    assert read_devkit_meta(meta) == {int(r[0]): str(r[1]) for r in leaves}
    assert sorted(read_devkit_meta(meta).values()) == canonical_wnids()


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"\x89HDF\r\n\x1a\n" + b"\0" * 200, "not a readable MAT-file"),
        (b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + b"\x00\x01IM", "no 'synsets' struct array"),
        (None, "no 'synsets' struct array"),
    ],
)
def test_bad_meta_mat_is_one_clear_error(tmp_path: Path, copies: dict[str, Path], content: bytes | None, needle: str) -> None:
    import scipy.io

    root = tmp_path / "c"
    shutil.copytree(copies["devkit"], root)
    meta = root / "ILSVRC2012_devkit_t12" / "data" / "meta.mat"
    if content is None:
        scipy.io.savemat(meta, {"classes": np.arange(3.0)})  # a MAT-file, but not the devkit's
    else:
        meta.write_bytes(content)
    with pytest.raises(ConfigError, match=needle) as err:
        dm(root).setup("validate")
    assert "\n" not in str(err.value) and "meta.mat" in str(err.value)


def test_randaugment_posterize_at_max_magnitude_does_not_crash() -> None:
    # rand-m9-mstd0.5-inc1 reaches magnitude 10 -> "keep 0 bits", which Pillow 13 rejects
    from lw_lightning.data.transforms import imagenet_train_transform

    t = imagenet_train_transform(28)
    ra = next(x for x in t.transforms if hasattr(x, "ops"))
    op = next(o for o in ra.ops if o.name == "PosterizeIncreasing")
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0.0
    img = Image.fromarray(np.full((20, 30, 3), 200, dtype=np.uint8))
    out = op(img)
    assert out.size == (30, 20) and np.asarray(out).max() == 0  # 0 bits kept: black, as in old Pillow / TF
    op.magnitude = 5  # 2 bits: 200 -> 192
    assert np.asarray(op(img)).max() == 192


def test_kaggle_csvs_with_a_byte_order_mark_and_unknown_wnids(tmp_path: Path, copies: dict[str, Path]) -> None:
    """Excel's "CSV UTF-8" starts LOC_val_solution.csv with a BOM (was: 'expected the header ...');
    a wnid that is not an ImageNet-1k class is one line naming the file and the line."""
    root = tmp_path / "c"
    shutil.copytree(copies["kaggle"], root)
    for name in ("LOC_val_solution.csv", "LOC_synset_mapping.txt"):
        text = (root / name).read_text().replace("\n", "\r\n")
        (root / name).write_bytes(text.encode("utf-8-sig"))
    d = dm(root)
    d.setup("validate")
    samples = d.datasets["val"].samples
    assert len(samples) == 8 and [y for _, y in samples] == [expected_val_label(p) for p, _ in samples]
    assert d.class_names[0] == "tench, Tinca tinca"  # not '\ufefftench'
    solution = root / "LOC_val_solution.csv"
    rows = solution.read_text(encoding="utf-8-sig").splitlines()
    rows[2] = rows[2].replace(rows[2].split(",")[1].split()[0], "n99999999", 1)  # line 3 of the file
    solution.write_text("\n".join(rows) + "\n")
    with pytest.raises(ConfigError) as err:
        dm(root).setup("validate")
    assert str(err.value) == f"{solution}:3: 'n99999999' is not one of the 1000 ImageNet-1k wnids"


def test_labelled_val_images_without_a_file_are_counted(tmp_path: Path, copies: dict[str, Path], caplog) -> None:
    """A flat val labelled by LOC_val_solution.csv / the devkit lists images the copy lacks: their
    number is logged as val/missing_images next to the accuracy (was: left out in silence)."""
    from pytorch_lightning import Trainer

    from lw_lightning.modules.classification import ImageClassifier

    root = tmp_path / "c"
    shutil.copytree(copies["kaggle"], root)
    (root / "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000003.JPEG").unlink()
    module = ImageClassifier({"arch": "vit", "preset": "tiny", "img_size": [28, 28], "patch_size": 14}, num_classes=1000)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    with caplog.at_level("WARNING"):
        metrics = trainer.validate(module, datamodule=dm(root, eval_batch_size=4), verbose=False)[0]
    # the copy's CSV also lists ILSVRC2012_val_00049999, which no copy of it holds
    assert metrics["val/missing_images"] == 2.0 and metrics["val/corrupt_images"] == 0.0
    assert "2 of 9 annotated images have no file (ILSVRC2012_val_00000003, ILSVRC2012_val_00049999)" in caplog.text
    metrics = trainer.test(module, datamodule=dm(copies["devkit"]), verbose=False)[0]
    assert metrics["test/missing_images"] == 50_000 - 8  # the devkit labels all 50,000
    metrics = trainer.validate(module, datamodule=dm(copies["folders"]), verbose=False)[0]
    assert metrics["val/missing_images"] == 0.0  # class folders: the files are the list


def test_upper_case_extensions_are_images(tmp_path: Path, copies: dict[str, Path]) -> None:
    root = tmp_path / "c"
    shutil.copytree(copies["folders"], root)
    folder = root / "train" / TINY_WNIDS[3]
    files = sorted(folder.iterdir())
    files[0].rename(files[0].with_suffix(".JPG"))
    files[1].rename(files[1].with_suffix(".jpg"))
    files[2].rename(files[2].with_suffix(".Png"))  # a JPEG named .Png: decoded by its bytes
    d = dm(root)
    d.setup("fit")
    assert {p.suffix for p, _ in d.datasets["train"].samples if p.parent == folder} == {".JPG", ".jpg", ".Png", ".JPEG"}


#: EXIF Orientation -> how the stored pixels are turned to show the picture upright (the EXIF spec)
SHOWN = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
UNDO = {Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90}


def save_as_phone(upright: Image.Image, path: Path, orientation: int) -> Image.Image:
    """Save ``upright`` as a camera does: the pixels as the sensor read them plus an EXIF Orientation
    that says how to turn them for display. Returns the stored image."""
    turn = SHOWN[orientation]
    stored = upright.transpose(UNDO.get(turn, turn)) if turn is not None else upright.copy()
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif, quality=95)
    return stored


def quadrant_means(img: Image.Image) -> list[float]:
    """Mean brightness of the top-left, top-right, bottom-left, bottom-right quarters."""
    a = np.asarray(img.convert("L"), dtype=np.float64)
    h, w = a.shape[0] // 2, a.shape[1] // 2
    return [a[:h, :w].mean(), a[:h, w:].mean(), a[h:, :w].mean(), a[h:, w:].mean()]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path: Path, copies: dict[str, Path], orientation: int) -> None:
    """A phone JPEG (Orientation=6: stored sideways) is fed upright, as the videos are."""
    from lw_lightning.data.images import header_size

    pixels = np.full((48, 64, 3), 20, dtype=np.int16)
    pixels[:24, :32] = 245  # top-left quarter white
    pixels[:24, 32:] = 130  # top-right grey: tells a flip from a turn
    noise = np.random.default_rng(orientation).integers(-5, 6, pixels.shape)  # a real scan to cut below
    upright = Image.fromarray((pixels + noise).clip(0, 255).astype(np.uint8))
    path = tmp_path / "phone.jpg"
    stored = save_as_phone(upright, path, orientation)
    with Image.open(path) as im:
        assert im.getexif()[0x0112] == orientation and im.size == stored.size
    got = load_rgb(path)
    assert got.size == (64, 48) and header_size(path) == (64, 48)
    tl, tr, bl, br = quadrant_means(got)
    assert tl > 235 and 120 < tr < 140 and bl < 30 and br < 30
    # through the dataset: the tagged file in place of a val image equals the upright picture
    root = tmp_path / "c"
    shutil.copytree(copies["folders"], root)
    target = root / "val" / TINY_WNIDS[1] / "ILSVRC2012_val_00000002.JPEG"
    save_as_phone(upright, target, orientation)
    (tmp_path / "plain").mkdir()
    upright.save(tmp_path / "plain" / "x.jpg", quality=95)
    d = dm(root, image_size=32)
    d.setup("validate")
    val = d.datasets["val"]
    item = val[[p for p, _ in val.samples].index(target)]
    expected = val.transform(load_rgb(tmp_path / "plain" / "x.jpg"))
    assert (item["image"] - expected).abs().mean() < 0.05  # the same picture (JPEG noise aside)
    target.write_bytes(target.read_bytes()[:-300])  # the scan data cut, the header (with EXIF) intact
    i = [p for p, _ in val.samples].index(target)
    assert not val[i]["valid"] and val.placeholder_size(i) == (64, 48)  # the placeholder is upright too
