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
# # What each TokenLearner token attends to, over time
#
# ViViT (Model 1) cuts a clip into tubelets (here 2 frames × 8 × 8 px), so a clip of T frames becomes
# `nt = T/2` temporal slices of `h × w` tokens. TokenLearner, placed after block L, turns **each slice**
# into S learned tokens: every token is a softmax-weighted sum over the slice's positions, with weights
# (its *attention map*) computed from the tokens themselves. The blocks after L then see `nt · S` tokens
# instead of `nt · h · w`.
#
# Here a tiny ViViT + TokenLearner is trained on synthetic Kinetics (a circle or a square moving left
# or right: the class needs shape *and* motion) and we look at each learned token's map on every slice of
# a test clip: as a grid, and as an animation.
#
# Give `CHECKPOINT` (a `.ckpt` of `python -m lw_lightning fit experiment=demo_video`)
# to look at that model instead of training one here.

# %% tags=["parameters"]
FIGURE_DIR = None  # folder for the figure (nb_tokenlearner_video_maps.png) and the GIF; None: a temporary folder, shown only
CHECKPOINT = None  # a VideoClassifier .ckpt (e.g. runs/demo_video/version_0/checkpoints/last.ckpt); None: train here
DATA_DIR = (
    None  # a synthetic Kinetics folder (python -m lw_lightning.data.synthetic_kinetics --make-tiny DIR); None: written here
)
WORK_DIR = None  # where the data and the training run go; None: a temporary folder
EPOCHS = 20  # training epochs when no CHECKPOINT is given
TRAIN_PER_CLASS = 40  # training clips per class written here
SEED = 0

# %%
import logging
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import Image as ShowImage
from IPython.display import display
from PIL import Image
from torch.utils.data import default_collate

from lw_lightning.config import load_config
from lw_lightning.data.synthetic_kinetics import SyntheticKineticsSpec, make_synthetic_kinetics
from lw_lightning.modules.video import VideoClassifier
from lw_lightning.tasks import run
from lw_lightning.viz import tokenlearner_maps

logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
torch.manual_seed(SEED)
work = Path(WORK_DIR) if WORK_DIR else Path(tempfile.mkdtemp(prefix="lw-video-"))
out_dir = Path(FIGURE_DIR) if FIGURE_DIR else work
out_dir.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Data and model
#
# The clips are written in the CVDF Kinetics layout (`annotations/*.csv`, `train/<id>_<start>_<end>.mp4`)
# and read by the same `KineticsDataModule` as real Kinetics. The recipe is `demo_video.yaml` (tiny
# ViViT: 4 blocks of width 64, TokenLearner with S = 4 tokens per slice after block 2, AdamW) with half
# the clips, fewer epochs and batches of 8, so it trains in about a minute on two CPU cores. That is
# enough for the shapes (50 % = shape right, direction guessed) and the start of the motion; the maps
# below follow the object already. A `CHECKPOINT` of the full recipe (40 epochs, 0.85) shows them sharper.

# %%
data_dir = Path(DATA_DIR) if DATA_DIR else work / "synthetic_kinetics"
if not (data_dir / "annotations").exists():
    t0 = time.perf_counter()
    counts = make_synthetic_kinetics(
        data_dir, SyntheticKineticsSpec(train_per_class=TRAIN_PER_CLASS, val_per_class=5, test_per_class=5, seed=SEED)
    )
    print(f"wrote {counts} clips to {data_dir} in {time.perf_counter() - t0:.0f} s")
overrides = [
    f"data.root={data_dir}",
    f"output_dir={work / 'runs'}",
    f"seed={SEED}",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.images=null",
]
if CHECKPOINT is None:
    # 20 steps an epoch and a higher peak rate: the short schedule leaves the model where it has the
    # shapes and is learning the direction (the 40-epoch recipe reaches 0.85, docs/video.md)
    fit_overrides = overrides + [f"trainer.max_epochs={EPOCHS}", "data.batch_size=8", "module.lr=2e-3"]
    print("$ python -m lw_lightning fit experiment=demo_video " + " ".join(fit_overrides))
    t0 = time.perf_counter()
    fit = run(load_config("demo_video", fit_overrides), "fit")
    CHECKPOINT = fit.trainer.checkpoint_callback.last_model_path  # the final weights (20 val videos pick a "best" by noise)
    print(
        f"trained in {time.perf_counter() - t0:.0f} s: val top-1 {fit.metrics['val/acc1']:.2f}, train top-1 {fit.metrics['train/acc1']:.2f}; "
        f"checkpoint {CHECKPOINT}"
    )
module = VideoClassifier.load_from_checkpoint(CHECKPOINT, map_location="cpu").eval()
cfg = module.model_cfg
nt, nh, nw = cfg.grid
print(
    f"ViViT {cfg.preset}: {cfg.num_frames} frames of {cfg.img_size}², tubelet {cfg.tubelet} -> {nt} slices of {nh}×{nw} tokens; "
    f"TokenLearner after block {cfg.tokenlearner_loc}: {nt * nh * nw} -> {module.net.num_output_tokens} tokens"
)

# %% [markdown]
# ## Test accuracy
#
# The test split is evaluated as the recipe says: 4 clips × 3 crops per video, softmax averaged.

# %%
test = run(
    load_config(
        "demo_video", overrides + [f"ckpt_path={CHECKPOINT}", "logger=null", "callbacks.lr_monitor=null"], evaluation=True
    ),
    "test",
)
classes = test.datamodule.class_names
print(
    f"test top-1 {test.metrics['test/acc1']:.2f} over {len(test.datamodule.datasets['test'])} videos ({len(classes)} classes: {classes}; chance {1 / len(classes):.2f})"
)

# %% [markdown]
# ## The maps of one clip per class
#
# `tokenlearner_maps(net)` returns the `[B·nt, S, h·w]` attention maps of the model's TokenLearner from its
# latest forward pass (TokenLearner keeps them in `last_maps`). One view per test video (the first clip,
# centre crop) is enough here.

# %%
ds = test.datamodule.datasets["test"]
picked = {}
for i in range(len(ds)):
    label = int(ds.records[i].label)
    picked.setdefault(label, i)
labels = sorted(picked)
# the workers deliver uint8 [V, T, H, W, 3] views; the DataModule normalises a collated batch on the
# device (what Lightning calls after the transfer) -> [B, V, 3, T, H, W]
batch = test.datamodule.on_after_batch_transfer(default_collate([ds[picked[label]] for label in labels]), 0)
video = batch["video"][:, 1]  # per video: clip 0, centre crop
with torch.no_grad():
    probs = module(video).softmax(-1)
maps = tokenlearner_maps(module.net).reshape(len(labels), nt, -1, nh, nw)  # [B, nt, S, h, w]
S = maps.shape[2]
tub_t = cfg.num_frames // nt


def to_rgb(frame):
    """[3, H, W] normalised with mean = std = 0.5 -> float RGB in [0, 1]."""
    return frame.permute(1, 2, 0).mul(0.5).add(0.5).clamp(0, 1).numpy()


def upsample(m, size):
    """[h, w] map -> [size, size], bilinear, rescaled to [0, 1] per map."""
    m = F.interpolate(m[None, None].float(), size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    return ((m - m.min()) / (m.max() - m.min() + 1e-8)).numpy()


def grid_figure(b, title):
    """Rows: the slice's middle frame, then each learned token's map over it; columns: temporal slices."""
    fig, axes = plt.subplots(S + 1, nt, figsize=(1.45 * nt + 0.6, 1.45 * (S + 1)), squeeze=False)
    for t in range(nt):
        frame = to_rgb(video[b, :, t * tub_t + tub_t // 2])
        axes[0, t].imshow(frame, interpolation="nearest")
        axes[0, t].set_title(f"slice {t} (frames {t * tub_t}–{t * tub_t + tub_t - 1})", fontsize=7)
        for s in range(S):
            ax = axes[s + 1, t]
            ax.imshow(frame * 0.55, interpolation="nearest")
            ax.imshow(upsample(maps[b, t, s], frame.shape[0]), cmap="inferno", alpha=0.65, vmin=0, vmax=1)
            if t == 0:
                ax.set_ylabel(f"token {s}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


for b, label in enumerate(labels):
    fig = grid_figure(b, f"{classes[label]} (predicted {classes[int(probs[b].argmax())]}, p={float(probs[b].max()):.2f})")
    plt.show()

# %% [markdown]
# Reading the grids: each column is one temporal slice (2 frames); each row one of the S learned tokens of
# that slice. A token whose map follows the moving shape from slice to slice has learned to pool the
# object wherever it is; others settle on the background or on the shape's edges. Tokens are learned
# per slice from the same weights, so token s of slice t and token s of slice t+1 are computed alike.

# %% [markdown]
# ## One figure for all classes
#
# The middle frame of each slice and the map of the token that weighs the shape most (the token whose
# map puts the most mass on the brightest pixels), for one clip of every class.


# %%
def object_token(b):
    """The token whose maps (over all slices) overlap the bright moving shape most."""
    scores = []
    for s in range(S):
        total = 0.0
        for t in range(nt):
            frame = torch.tensor(to_rgb(video[b, :, t * tub_t + tub_t // 2])).mean(-1)
            shape = (frame > frame.mean() + frame.std()).float()
            cells = F.adaptive_avg_pool2d(shape[None, None], (nh, nw))[0, 0]
            total += float((maps[b, t, s] * cells).sum())
        scores.append(total)
    return int(np.argmax(scores))


fig, axes = plt.subplots(2 * len(labels), nt, figsize=(1.5 * nt + 1.4, 1.5 * 2 * len(labels)), squeeze=False)
for b, label in enumerate(labels):
    s = object_token(b)
    for t in range(nt):
        frame = to_rgb(video[b, :, t * tub_t + tub_t // 2])
        axes[2 * b, t].imshow(frame, interpolation="nearest")
        axes[2 * b + 1, t].imshow(frame * 0.55, interpolation="nearest")
        axes[2 * b + 1, t].imshow(upsample(maps[b, t, s], frame.shape[0]), cmap="inferno", alpha=0.65, vmin=0, vmax=1)
        if b == 0:
            axes[0, t].set_title(f"slice {t}", fontsize=9)
    axes[2 * b, 0].set_ylabel(classes[label].replace(" (", "\n(").replace(", ", ",\n"), fontsize=7)
    axes[2 * b + 1, 0].set_ylabel(f"token {s} map", fontsize=7)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle(
    f"TokenLearner in ViViT: one learned token's attention over the {nt} temporal slices\n"
    f"(synthetic Kinetics test clips, S={S} tokens per slice after block {cfg.tokenlearner_loc}; test top-1 {test.metrics['test/acc1']:.2f})",
    fontsize=9,
)
fig.tight_layout()
figure = out_dir / "nb_tokenlearner_video_maps.png"
fig.savefig(figure, dpi=120, bbox_inches="tight")
print("saved", figure)
plt.show()

# %% [markdown]
# ## Animation
#
# Every frame of the first clip next to each token's map of the slice that frame belongs to, saved as a
# GIF (Pillow; no video encoder needed).


# %%
def animation_frames(b, cell=96):
    cmap = plt.get_cmap("inferno")
    frames = []
    for f in range(cfg.num_frames):
        t = f // tub_t
        rgb = to_rgb(video[b, :, f])
        tiles = [rgb]
        for s in range(S):
            heat = cmap(upsample(maps[b, t, s], rgb.shape[0]))[..., :3]
            tiles.append(rgb * 0.35 + heat * 0.65)
        row = np.concatenate([np.pad(x, ((2, 2), (2, 2), (0, 0)), constant_values=1.0) for x in tiles], axis=1)
        img = Image.fromarray((row * 255).astype(np.uint8))
        frames.append(img.resize((img.width * cell // rgb.shape[0], img.height * cell // rgb.shape[0]), Image.Resampling.NEAREST))
    return frames


frames = animation_frames(0)
gif = out_dir / "nb_tokenlearner_video_maps.gif"
frames[0].save(gif, save_all=True, append_images=frames[1:], duration=300, loop=0)
print(f"saved {gif} ({len(frames)} frames: the clip, then tokens 0..{S - 1})")
display(ShowImage(filename=str(gif)))
