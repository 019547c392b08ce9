# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A tour of the datasets
#
# The four DataModules of `lw_lightning.data` — ImageNet, ADE20K, Swedish Traffic Signs and Kinetics —
# each on a tiny copy that its own `make_tiny` generator writes in the **real on-disk layout** (the same
# copies the tests and the `--make-tiny` commands use). For each one: what a training batch holds, and
# one sample before and after the training augmentation.
#
# Nothing is downloaded; the copies go to a temporary folder. The real layouts are described in
# `data/README.md`; point `data.root=...` of a recipe at a real copy to train on it.

# %% tags=["parameters"]
FIGURE_DIR = None  # folder for the summary figure (nb_datasets_tour.png); None: shown only
WORK_DIR = None  # where the tiny copies are written; None: a temporary folder
SEED = 0  # augmentation seed

# %%
import random
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import default_collate

from lw_lightning.data import ade20k, imagenet, traffic_signs
from lw_lightning.data.ade20k import ADE20KDataModule, colorize
from lw_lightning.data.imagenet import ImageNetDataModule
from lw_lightning.data.kinetics import KineticsDataModule
from lw_lightning.data.synthetic_kinetics import SyntheticKineticsSpec, make_synthetic_kinetics
from lw_lightning.data.traffic_signs import TrafficSignsDataModule
from lw_lightning.data.video_io import count_frames, read_frames
from lw_lightning.viz import denormalize

torch.manual_seed(SEED)  # torchvision's transforms draw from torch, timm's RandAugment from `random`
random.seed(SEED)
work = Path(WORK_DIR) if WORK_DIR else Path(tempfile.mkdtemp(prefix="lw-datasets-"))
work.mkdir(parents=True, exist_ok=True)
print("tiny copies in", work)


def show_row(images, titles=None, size=2.2, suptitle=None):
    """Pictures (uint8 HxWx3 arrays or PIL images) side by side."""
    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size * 1.05), squeeze=False)
    for ax, im, title in zip(axes[0], images, titles or [None] * len(images)):
        ax.imshow(np.asarray(im))
        ax.set_axis_off()
        if title:
            ax.set_title(title, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    plt.show()


def with_box(image, box, colour=(0, 255, 0)):
    """An (H, W, 3) uint8 picture with the XYXY ``box`` drawn (nothing for the -1s of "no sign")."""
    im = Image.fromarray(np.asarray(image))
    if min(box) >= 0:
        ImageDraw.Draw(im).rectangle([float(v) for v in box], outline=colour, width=2)
    return im


summary = {}  # dataset -> (pictures, titles) for the figure at the end

# %% [markdown]
# ## ImageNet
#
# `imagenet.make_tiny` writes real wnids and file names in the plain `train/<wnid>/`, `val/<wnid>/`
# layout (the Kaggle and devkit layouts are options), including the real set's oddities: a CMYK JPEG, a
# PNG named `.JPEG` and a grayscale image. Training uses the DeiT recipe (bicubic RandomResizedCrop,
# flip, RandAugment `rand-m9-mstd0.5-inc1`, RandomErasing); evaluation resizes to `size / crop_pct` and
# centre-crops.

# %%
in_root = imagenet.make_tiny(work / "imagenet")
in_dm = ImageNetDataModule(root=str(in_root), image_size=160, batch_size=8, num_workers=0, pin_memory=False, seed=SEED)
in_dm.setup("fit")
batch = next(iter(in_dm.train_dataloader()))
print({k: tuple(v.shape) for k, v in batch.items() if isinstance(v, torch.Tensor)})
show_row(
    [denormalize(x) for x in batch["image"]],
    [in_dm.class_names[int(y)][:18] for y in batch["label"]],
    size=1.6,
    suptitle="ImageNet: one training batch (label = class name)",
)

# %%
train_ds = in_dm.datasets["train"]
i = 3
raw = Image.open(train_ds.image_path(i)).convert("RGB")
augmented = [denormalize(train_ds[i]["image"]) for _ in range(4)]
val_view = denormalize(in_dm.datasets["val"][0]["image"])
show_row(
    [raw, *augmented, val_view],
    [
        "file " + "x".join(map(str, raw.size)),
        "train aug 1",
        "train aug 2",
        "train aug 3",
        "train aug 4",
        "eval (resize + centre crop)",
    ],
    suptitle=f"ImageNet: {train_ds.image_path(i).name} before and after augmentation",
)
summary["ImageNet"] = ([raw, *augmented[:3]], ["file", "RandAugment + RRC", "+ erasing / flip", "another draw"])

# %% [markdown]
# ## ADE20K
#
# `ade20k.make_tiny` writes an `ADEChallengeData2016` folder (images, single-channel annotation PNGs in
# mode L and P, `objectInfo150.txt`). The dataset applies mmsegmentation's `reduce_zero_label` (raw 0
# "other" becomes 255 = ignore, class k becomes k-1). Training follows mmseg: random rescale of a
# (4·crop, crop) scale by 0.5–2, a random crop in which no class covers more than 75 %, flip,
# photometric distortion, padding with ignore. Masks are drawn in the benchmark's palette
# (`ade20k.colorize`); black is ignore.

# %%
ade_root = ade20k.make_tiny(work / "ade20k")
ade_dm = ADE20KDataModule(root=str(ade_root), crop_size=224, batch_size=4, num_workers=0, pin_memory=False, seed=SEED)
ade_dm.setup("fit")
batch = next(iter(ade_dm.train_dataloader()))
print({k: tuple(v.shape) for k, v in batch.items() if isinstance(v, torch.Tensor)})
pictures, titles = [], []
for x, m in zip(batch["image"], batch["mask"]):
    pictures += [denormalize(x), colorize(m)]
    present = [ade_dm.class_names[c] for c in m.unique().tolist() if c != 255]
    titles += [f"crop {tuple(x.shape[-2:])}", f"{len(present)} classes"]
show_row(pictures, titles, size=1.7, suptitle="ADE20K: one training batch (image, mask in the ADE palette)")

# %%
ade_train = ade_dm.datasets["train"]
img_path, ann_path = ade_train.pairs[0]
raw = np.asarray(Image.open(img_path).convert("RGB"))
raw_mask = colorize(ade20k.load_label(ann_path))
aug = [ade_train[0] for _ in range(2)]
val_sample = ade_dm.datasets["val"][0]
show_row(
    [raw, raw_mask] + [p for s in aug for p in (denormalize(s["image"]), colorize(s["mask"]))],
    ["file " + "x".join(map(str, raw.shape[1::-1])), "its annotation", "aug 1", "aug 1 mask", "aug 2", "aug 2 mask"],
    suptitle=f"ADE20K: {img_path.name} before and after augmentation",
)
print(
    "evaluation sample: image",
    tuple(val_sample["image"].shape),
    "(resized), mask",
    tuple(val_sample["mask"].shape),
    "(original resolution)",
)
crop, crop_mask = denormalize(aug[0]["image"]), colorize(aug[0]["mask"])
blend = (0.45 * crop + 0.55 * crop_mask).astype(np.uint8)  # image and mask stay aligned through the crop
summary["ADE20K"] = (
    [raw, raw_mask, blend, crop_mask],
    ["file", "annotation (ADE palette)", "train crop + its mask", "mask (black: ignore)"],
)

# %% [markdown]
# ## Swedish Traffic Signs
#
# `traffic_signs.make_tiny` writes `Set1/` (flat) and `Set2/Set2Part0/` (nested, CRLF line ends) with
# `annotations.txt` in the dataset's own grammar, quirks included (a stray letter in a coordinate,
# images with only `MISC_SIGNS`, blurred or non-speed signs that are dropped). The label is the speed
# limit of the largest visible speed sign (EMPTY when there is none); its box travels through the
# augmentation (colour jitter, translation of up to 100 px of the native 1280-px frame) with the image.

# %%
sts_root = traffic_signs.make_tiny(work / "sts")
sts_dm = TrafficSignsDataModule(root=str(sts_root), batch_size=6, num_workers=0, pin_memory=False, seed=SEED)
sts_dm.setup("fit")
batch = next(iter(sts_dm.train_dataloader()))
print({k: tuple(v.shape) for k, v in batch.items() if isinstance(v, torch.Tensor)})
show_row(
    [with_box(denormalize(x), b.tolist()) for x, b in zip(batch["image"], batch["box"])],
    [sts_dm.class_names[int(y)] for y in batch["label"]],
    size=2.0,
    suptitle="Swedish Traffic Signs: one training batch (green: the deciding sign's box)",
)

# %%
sts_train = sts_dm.datasets["train"]
i = next(j for j in range(len(sts_train)) if sts_train.samples[j].box is not None)
s = sts_train.samples[i]
raw = with_box(np.asarray(Image.open(s.path).convert("RGB")), s.box)
aug = [sts_train[i] for _ in range(3)]
show_row(
    [raw] + [with_box(denormalize(a["image"]), a["box"].tolist()) for a in aug],
    ["file + annotated box", "aug 1", "aug 2", "aug 3"],
    size=2.6,
    suptitle=f"Swedish Traffic Signs: {s.path.name} ({sts_dm.class_names[s.label]}) before and after augmentation",
)
summary["Swedish Traffic Signs"] = (
    [raw] + [with_box(denormalize(a["image"]), a["box"].tolist()) for a in aug[:2]],
    [f"file ({sts_dm.class_names[s.label]})", "jitter + shift", "another draw"],
)

# %% [markdown]
# ## Kinetics
#
# `make_synthetic_kinetics` writes H.264 mp4 clips and `annotations/{train,val,test}.csv` in the CVDF
# Kinetics layout (YouTube-style ids, labels with commas and parentheses). Each clip is a circle or a
# square moving left or right, so a class needs both appearance and motion. Training takes one clip of
# `num_frames` frames every `frame_stride`, short-side scale jitter and a random crop (no flip here: it
# would swap "left" and "right"); evaluation takes `test_clips` clips × `test_crops` crops per video.
# The workers deliver uint8 clips; flips, colour changes and normalisation run on the collated batch
# (`on_after_batch_transfer`).

# %%
kin_root = work / "kinetics"
if not (kin_root / "annotations").exists():
    make_synthetic_kinetics(kin_root, SyntheticKineticsSpec(train_per_class=2, val_per_class=1, test_per_class=1, seed=SEED))
kin_dm = KineticsDataModule(
    root=str(kin_root),
    num_frames=8,
    frame_stride=2,
    img_size=32,
    train_short_side=[32, 40],
    eval_short_side=36,
    flip=False,
    test_clips=2,
    test_crops=3,
    batch_size=4,
    num_workers=0,
    seed=SEED,
)
kin_dm.setup("fit")
raw_batch = next(iter(kin_dm.train_dataloader()))  # uint8 [B, T, H, W, 3] clips and their augmentation parameters
batch = kin_dm.on_after_batch_transfer(raw_batch, 0)  # flip / colour / normalise on the device, as Lightning calls it
print({k: tuple(v.shape) for k, v in raw_batch.items()}, "->", tuple(batch["video"].shape), "classes:", kin_dm.class_names)


def clip_frames(video):
    """[3, T, H, W] normalised with mean = std = 0.5 -> T uint8 frames."""
    return [
        (video[:, t].permute(1, 2, 0).mul(0.5).add(0.5).clamp(0, 1).numpy() * 255).astype(np.uint8) for t in range(video.shape[1])
    ]


for v, y in zip(batch["video"][:2], batch["label"][:2]):
    show_row(
        clip_frames(v),
        [f"frame {2 * t}" for t in range(v.shape[1])],
        size=1.2,
        suptitle=f"Kinetics training clip: {kin_dm.class_names[int(y)]}",
    )

# %%
rec = kin_dm.datasets["train"].records[0]
raw = read_frames(rec.path, list(range(0, 16, 2)))  # the file's own frames, no augmentation
aug = clip_frames(kin_dm.on_after_batch_transfer(default_collate([kin_dm.datasets["train"][0]]), 0)["video"][0])
kin_dm.setup("test")
views = kin_dm.on_after_batch_transfer(default_collate([kin_dm.datasets["test"][0]]), 0)["video"][
    0
]  # [clips x crops, 3, T, H, W]
print(
    f"{rec.path.split('/')[-1]}: {count_frames(rec.path)} frames of {raw.shape[1]}x{raw.shape[2]}; "
    f"a test video gives {views.shape[0]} views of {tuple(views.shape[1:])}"
)
show_row(
    list(raw[::2]) + aug[::2],
    ["file t=0", "file t=4", "file t=8", "file t=12", "aug t=0", "aug t=4", "aug t=8", "aug t=12"],
    size=1.3,
    suptitle=f"Kinetics: {kin_dm.class_names[rec.label]}, decoded frames and the augmented training clip",
)
show_row(
    [clip_frames(v)[4] for v in views],
    [f"clip {c}, crop {r}" for c in range(2) for r in range(3)],
    size=1.3,
    suptitle="Kinetics evaluation views of one test video (middle frame of each)",
)
summary["Kinetics"] = (list(raw[::2]), ["frame 0", "frame 4", "frame 8", "frame 12"])

# %% [markdown]
# ## Summary figure
#
# One row per dataset: the file as stored and what training sees.

# %%
ncols = max(len(p) for p, _ in summary.values())
fig, axes = plt.subplots(len(summary), ncols, figsize=(2.6 * ncols, 2.5 * len(summary)), squeeze=False)
for row, (name, (pics, titles)) in enumerate(summary.items()):
    for col in range(ncols):
        ax = axes[row, col]
        ax.set_axis_off()
        if col < len(pics):
            ax.imshow(np.asarray(pics[col]), interpolation="nearest")
            ax.set_title(titles[col], fontsize=9)
    axes[row, 0].text(
        -0.08, 0.5, name, transform=axes[row, 0].transAxes, rotation=90, ha="right", va="center", fontsize=11, weight="bold"
    )
fig.suptitle("lw_lightning.data: each DataModule on its tiny generated copy, before and after augmentation", fontsize=11)
fig.tight_layout()
if FIGURE_DIR:
    Path(FIGURE_DIR).mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(FIGURE_DIR) / "nb_datasets_tour.png", dpi=110, bbox_inches="tight")
    print("saved", Path(FIGURE_DIR) / "nb_datasets_tour.png")
plt.show()
