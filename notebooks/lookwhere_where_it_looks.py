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
# # Where LookWhere looks
#
# LookWhere (Fuller et al., 2025) splits a ViT into a cheap **selector** that sees a low-resolution copy
# of the image and predicts one score per high-resolution patch, and an **extractor** that runs the full
# depth on only the top-k patches (plus the selector's CLS and register tokens). Dense outputs are
# filled in for the patches it skipped by K-NN inverse-distance interpolation of the k it kept.
#
# This notebook follows one image through the model — its low-res copy, the selector's heat map, the
# patches kept at several k, the K-NN-filled dense features — and then measures accuracy and FLOPs vs k.
#
# Where the model comes from:
# * `DEMO_DIR`: the output folder of `make demo` (`runs`, or `runs/seed_0`): its fine-tuned LookWhere and
#   its full-res ViT teacher, on the demo's 224-px synthetic signs;
# * otherwise the demo pipeline in miniature is run here, at 112 px in about a minute on two CPU cores:
#   (a) a tiny full-res ViT teacher, (b) what-where distillation into LookWhere, (c) fine-tuning with
#   the selector frozen. Same recipes as `make demo`, smaller data and fewer epochs, so a lower accuracy.
# * `LOOKWHERE_WEIGHTS` (e.g. the released `lookwhere_dinov2.pt`, ViT-B/14 at 518 px) adds the maps and
#   dense features of those weights on the same kind of image (they have no classifier head, so the
#   accuracy section stays with the small model).

# %% tags=["parameters"]
FIGURE_DIR = None  # folder for the summary figure (nb_lookwhere_where_it_looks.png); None: shown only
DEMO_DIR = None  # output folder of `make demo` / `python -m lw_lightning.demo`; None: train a tiny pipeline here
LOOKWHERE_WEIGHTS = None  # official-layout LookWhere weights (lookwhere_dinov2.pt); None: skip that section
LOOKWHERE_MODEL = "lookwhere_base_patch14_reg4_518"  # the registered architecture of LOOKWHERE_WEIGHTS (the release's)
LOOKWHERE_SIZE = 518  # input size for LOOKWHERE_WEIGHTS
WORK_DIR = None  # where the training runs go; None: a temporary folder
SEED = 0
KS = None  # patch counts of the accuracy-vs-k sweep; None: 2, 4, 8, ... and all patches
TRAIN_IMAGES = 800  # training images of the pipeline trained here (more: higher accuracy, longer)
TEACHER_EPOCHS = 5  # epochs of its teacher (distillation: 1, fine-tuning: 2)

# %%
import logging
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from IPython.display import Markdown, display
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from omegaconf import OmegaConf

from benchmarks.compare import find_demo_runs, load_classifier  # the repository's benchmarks/ (its root on PYTHONPATH)
from lw_lightning.data.synthetic_signs import CLASS_NAMES, SyntheticSigns
from lw_lightning.demo import best_checkpoint, run_stage
from lw_lightning.flops import image_model_flops
from lw_lightning.models.config import resolve_k
from lw_lightning.models.registry import create_model
from lw_lightning.viz import denormalize, selection_overlay

logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
torch.manual_seed(SEED)
work = Path(WORK_DIR) if WORK_DIR else Path(tempfile.mkdtemp(prefix="lw-lookwhere-"))

# %% [markdown]
# ## A trained LookWhere and its teacher

# %%
if DEMO_DIR:
    runs = find_demo_runs(DEMO_DIR)
    teacher = load_classifier(str(runs.teacher_ckpt)).eval()
    lookwhere = load_classifier(str(runs.finetune_ckpt)).eval()
    datamodule = instantiate(OmegaConf.load(runs.finetune_config).data, _convert_="all")
    print(f"demo run {DEMO_DIR}: teacher {runs.teacher_ckpt.name}, LookWhere {runs.finetune_ckpt.name}")
else:
    # the demo's recipes at 112 px (8×8 = 64 patches), a larger sign, a stronger patch loss and short schedules
    common = [
        f"output_dir={work}",
        f"seed={SEED}",
        "data.image_size=112",
        "module.model.img_size=[112,112]",
        "module.model.selector_img_size=56",
        "data.sign_fraction=0.12",
        f"data.num_train={TRAIN_IMAGES}",
        "data.num_val=96",
        "data.num_test=256",
        "data.batch_size=16",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "callbacks.images=null",
        "callbacks.flops=null",
    ]
    t0 = time.perf_counter()
    a, ta = run_stage(
        "(a) full-resolution ViT (the teacher)",
        "demo_teacher",
        common + ["module.patch_loss_weight=3", "module.lr=2e-3", f"trainer.max_epochs={TEACHER_EPOCHS}"],
    )
    b, tb = run_stage(
        "(b) what-where distillation into LookWhere",
        "demo_distill",
        common
        + [
            f"module.teacher.checkpoint={best_checkpoint(a)}",
            "module.k_min=4",
            "module.k_max=24",
            "module.val_k=8",
            "trainer.max_epochs=1",
        ],
    )
    c, tc = run_stage(
        "(c) fine-tune LookWhere, selector frozen",
        "demo_finetune",
        common
        + [
            f"module.model.pretrained={Path(b.log_dir) / 'lookwhere.pt'}",
            "module.train_k=8",
            "module.eval_k=8",
            "module.eval_ks=[]",
            "trainer.max_epochs=2",
        ],
    )
    print(
        f"\nstage times: teacher {ta:.0f} s, distillation {tb:.0f} s, fine-tuning {tc:.0f} s (total {time.perf_counter() - t0:.0f} s)"
    )
    teacher, lookwhere = load_classifier(best_checkpoint(a)).eval(), load_classifier(best_checkpoint(c)).eval()
    datamodule = c.datamodule
datamodule.setup("test")
test_set = datamodule.datasets["test"]
net = lookwhere.net
cfg = net.cfg
size = tuple(cfg.img_size)
grid = cfg.grid
n = grid[0] * grid[1]
p = cfg.patch_size
print(
    f"LookWhere {cfg.preset}: {size[0]}×{size[1]} px, {grid[0]}×{grid[1]} = {n} patches of {p} px; "
    f"selector: {cfg.selector_depth} blocks on a {cfg.selector_size_for(size)} copy"
)

# %% [markdown]
# ## One image: the low-res copy and the selector's map
#
# The selector resizes the image (antialiased) to its own small input, runs a few ViT blocks on it and
# predicts an r × r block of sub-patch logits per low-res token, resized to one score per high-res patch.

# %%
sign_indices = [i for i in range(len(test_set)) if int(test_set[i]["label"]) > 0]
sample = test_set[sign_indices[0]]
image, box = sample["image"], sample["box"].tolist()
with torch.no_grad():
    out = net(image[None], k=8, dense=True)
lo = cfg.selector_size_for(size)
low_res = F.interpolate(image[None], size=lo, mode="bilinear", align_corners=False, antialias=cfg.antialias)[0]
heat = out["selector_map"][0].reshape(grid)

fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
axes[0].imshow(denormalize(image))
axes[0].set_title(f"image ({CLASS_NAMES[int(sample['label'])]}), {size[0]} px")
axes[1].imshow(denormalize(low_res), interpolation="nearest")
axes[1].set_title(f"what the selector sees: {lo[0]} px")
im = axes[2].imshow(heat.numpy(), cmap="inferno")
axes[2].set_title(f"selector map ({grid[0]}×{grid[1]} patch scores)")
fig.colorbar(im, ax=axes[2], fraction=0.046)
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The patches kept at several k
#
# Top-k of the map, highest first (yellow), over the map as a red heat layer; the sign's ground-truth box
# in green.

# %%
show_ks = [k for k in (2, 4, 8, 16) if k <= n]
fig, axes = plt.subplots(1, len(show_ks), figsize=(3 * len(show_ks), 3.2))
for ax, k in zip(axes, show_ks):
    sel = net.select(out["selector_map"], k)[0]
    ax.imshow(selection_overlay(image, out["selector_map"][0], sel, p, box))
    ax.set_title(f"k = {k} of {n} ({k / n:.0%})")
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## K-NN-filled dense features, as RGB
#
# The extractor returns features only for the k kept patches; `dense=True` fills every other patch with
# the inverse-distance-weighted mean of its 5 nearest kept ones (`models/knn_upsample.py`). The first
# three principal components (fitted once, on the teacher's features of this image, so colours are
# comparable across k) are shown as RGB. With more patches the fill gets closer to a dense map.


# %%
def teacher_dense(image):
    with torch.no_grad():
        return teacher.net(image[None], dense=True)["dense"][0]


def pca_rgb(features, basis, lo_hi):
    """(D, gh, gw) features -> (gh, gw, 3) in [0, 1] on the given PCA basis and value range."""
    d = features.shape[0]
    x = features.reshape(d, -1).T @ basis
    lo_, hi_ = lo_hi
    return ((x - lo_) / (hi_ - lo_ + 1e-8)).clamp(0, 1).reshape(*features.shape[1:], 3).numpy()


ref = teacher_dense(image)
flat = ref.reshape(ref.shape[0], -1).T
mean = flat.mean(0)
_, _, v = torch.pca_lowrank(flat - mean, q=3, center=False)
proj = (flat - mean) @ v
lo_hi = (proj.min(0).values, proj.max(0).values)
dense_ks = [k for k in (4, 8, 16) if k <= n]
fig, axes = plt.subplots(1, len(dense_ks) + 2, figsize=(2.8 * (len(dense_ks) + 2), 3.0))
axes[0].imshow(denormalize(image))
axes[0].set_title("image")
dense_pictures = {}
for ax, k in zip(axes[1:], dense_ks):
    with torch.no_grad():
        d = net(image[None], k=k, dense=True)["dense"][0]
    dense_pictures[k] = pca_rgb(d - mean[:, None, None], v, lo_hi)
    ax.imshow(dense_pictures[k], interpolation="nearest")
    ax.set_title(f"LookWhere, k = {k}")
axes[-1].imshow(pca_rgb(ref - mean[:, None, None], v, lo_hi), interpolation="nearest")
axes[-1].set_title(f"full-res ViT, all {n}")
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Accuracy vs k, and what each setting costs
#
# The test split at every k of `KS`: the selector runs once per batch and only the extractor runs again
# for each k (`LookWhere.extract`). FLOPs per image are counted with `torch.utils.flop_counter` on one
# forward pass (`lw_lightning.flops.image_model_flops`), selector included.

# %%
ks = [k for k in KS if k <= n] if KS else sorted({2**i for i in range(1, n.bit_length()) if 2**i < n} | {n})
correct = dict.fromkeys(ks, 0)
teacher_correct, total = 0, 0
loader = datamodule.test_dataloader()
with torch.no_grad():
    for batch in loader:
        images, labels = batch["image"], batch["label"]
        sel = net.selector(images, net.grid(images))
        for k in ks:
            feats = net.extract(images, sel, net.grid(images), k=k)["cls"]
            correct[k] += int((lookwhere.head(feats).argmax(-1) == labels).sum())
        teacher_correct += int((teacher(images)[0].argmax(-1) == labels).sum())
        total += labels.numel()
acc = {k: correct[k] / total for k in ks}
teacher_acc = teacher_correct / total
flops = {k: image_model_flops(net, size, k=k) for k in ks}
teacher_flops = image_model_flops(teacher.net, size)
lines = [
    "| model | patches | % of N | test top-1 | MFLOPs / image | fewer FLOPs |",
    "|---|---|---|---|---|---|",
    f"| full-res ViT | {n} | 100% | {teacher_acc:.1%} | {teacher_flops / 1e6:.1f} | 1.0× |",
]
lines += [
    f"| LookWhere k={k} | {k} | {k / n:.0%} | {acc[k]:.1%} | {flops[k] / 1e6:.1f} | {teacher_flops / flops[k]:.1f}× |" for k in ks
]
display(
    Markdown(
        f"Test split: {total} images, {len(CLASS_NAMES)} classes (chance {1 / len(CLASS_NAMES):.0%}).\n\n" + "\n".join(lines)
    )
)

# %% [markdown]
# Accuracy saturates long before k reaches N: the selector puts the sign's patches first, and the
# patches of clutter it adds after them carry nothing the classifier needs. The FLOPs fall roughly in
# proportion to k, down to the selector's fixed cost.


# %%
def accuracy_axes(ax_k, ax_f):
    ax_k.plot(ks, [100 * acc[k] for k in ks], marker="o", color="tab:blue", label="LookWhere")
    ax_k.axhline(100 * teacher_acc, color="black", linestyle="-", linewidth=1, label=f"full-res ViT ({n} patches)")
    ax_k.axhline(100 / len(CLASS_NAMES), color="0.5", linestyle="--", linewidth=1, label="chance")
    ax_k.set_xscale("log", base=2)
    ax_k.set_xticks(ks, [str(k) for k in ks])
    ax_k.minorticks_off()
    ax_k.set_xlabel(f"k (patches kept of {n})")
    ax_k.set_ylabel("test top-1 (%)")
    ax_k.grid(alpha=0.3)
    ax_k.legend(fontsize=7, frameon=False)
    ax_f.plot([flops[k] / 1e6 for k in ks], [100 * acc[k] for k in ks], marker="o", color="tab:blue", label="LookWhere")
    for k in ks:
        ax_f.annotate(f"k={k}", (flops[k] / 1e6, 100 * acc[k]), fontsize=7, xytext=(3, -9), textcoords="offset points")
    ax_f.plot(
        [teacher_flops / 1e6],
        [100 * teacher_acc],
        marker="*",
        markersize=12,
        color="black",
        linestyle="none",
        label="full-res ViT",
    )
    ax_f.set_xscale("log")
    ax_f.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax_f.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax_f.xaxis.set_minor_formatter(NullFormatter())
    ax_f.set_xlabel("MFLOPs per image (log)")
    ax_f.set_ylabel("test top-1 (%)")
    ax_f.grid(alpha=0.3, which="both")
    ax_f.legend(fontsize=7, frameon=False)


fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
accuracy_axes(ax1, ax2)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The released weights (`LOOKWHERE_WEIGHTS`)
#
# The same pictures for official-layout weights, on a synthetic sign image rendered at `LOOKWHERE_SIZE`
# (the model's positional embeddings are resampled to it when they were trained at another size).

# %%
if LOOKWHERE_WEIGHTS:
    # the file decides the selector's r and resize mode; any input size loads (positional embeddings resampled)
    big = create_model(LOOKWHERE_MODEL, img_size=[LOOKWHERE_SIZE, LOOKWHERE_SIZE], pretrained=LOOKWHERE_WEIGHTS).eval()
    big_sample = SyntheticSigns(8, (LOOKWHERE_SIZE, LOOKWHERE_SIZE), split="test", seed=SEED, sign_fraction=0.02)[1]
    x, big_box = big_sample["image"], big_sample["box"].tolist()
    bn = big.cfg.grid[0] * big.cfg.grid[1]
    bk = resolve_k(0.1, bn)
    with torch.no_grad():
        bout = big(x[None], k=bk, dense=True)
    feats = bout["dense"][0]
    flat = feats.reshape(feats.shape[0], -1).T
    bmean = flat.mean(0)
    _, _, bv = torch.pca_lowrank(flat - bmean, q=3, center=False)
    bproj = (flat - bmean) @ bv
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    axes[0].imshow(selection_overlay(x, bout["selector_map"][0], bout["selected"][0], big.cfg.patch_size, list(big_box)))
    axes[0].set_title(f"{Path(LOOKWHERE_WEIGHTS).name}: map + top {bk} of {bn}", fontsize=8)
    axes[1].imshow(bout["selector_map"][0].reshape(big.cfg.grid).numpy(), cmap="inferno")
    axes[1].set_title("selector map", fontsize=8)
    axes[2].imshow(pca_rgb(feats - bmean[:, None, None], bv, (bproj.min(0).values, bproj.max(0).values)), interpolation="nearest")
    axes[2].set_title(f"K-NN-filled dense features, k={bk} (PCA)", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    plt.show()
else:
    print("LOOKWHERE_WEIGHTS not given: skipped")

# %% [markdown]
# ## Summary figure

# %%
fig = plt.figure(figsize=(14, 6.6))
gs = fig.add_gridspec(2, 6, height_ratios=[1, 1.05])
panels = [
    (denormalize(image), f"image: {CLASS_NAMES[int(sample['label'])]}"),
    (denormalize(low_res), f"selector input ({lo[0]} px)"),
    (None, "selector map"),
    (selection_overlay(image, out["selector_map"][0], net.select(out["selector_map"], 4)[0], p, box), f"kept: k = 4 of {n}"),
    (selection_overlay(image, out["selector_map"][0], net.select(out["selector_map"], 8)[0], p, box), f"kept: k = 8 of {n}"),
    (dense_pictures.get(8, dense_pictures[max(dense_pictures)]), "dense features, k = 8 (PCA→RGB)"),
]
for i, (pic, title) in enumerate(panels):
    ax = fig.add_subplot(gs[0, i])
    if pic is None:
        ax.imshow(heat.numpy(), cmap="inferno")
    else:
        ax.imshow(pic, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
accuracy_axes(fig.add_subplot(gs[1, :3]), fig.add_subplot(gs[1, 3:]))
source = f"make demo run {DEMO_DIR}" if DEMO_DIR else "tiny pipeline trained in this notebook"
fig.suptitle(f"Where LookWhere looks, and what it costs (synthetic signs, {size[0]} px; {source})", fontsize=11)
fig.tight_layout()
if FIGURE_DIR:
    Path(FIGURE_DIR).mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(FIGURE_DIR) / "nb_lookwhere_where_it_looks.png", dpi=110, bbox_inches="tight")
    print("saved", Path(FIGURE_DIR) / "nb_lookwhere_where_it_looks.png")
plt.show()
