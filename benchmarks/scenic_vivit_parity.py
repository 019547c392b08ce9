"""Our ViViT beside scenic's flax ViViT, run as-is on the same random weights and inputs (fp32, CPU).

scenic is no dependency of this project, so this runs in two interpreters:

1. ``run`` (a scratch venv with jax, flax, ml_collections, immutabledict, absl-py, scipy, clu and a
   checkout of google-research/scenic; tensorflow is stubbed, only its checkpoint IO needs it):
   builds each case with scenic's own modules, replaces every parameter by a random one (scenic
   zero-initialises CLS tokens and heads), and writes parameters, input, logits and scenic's own
   initial parameter statistics to an ``.npz``::

       /tmp/scenic_venv/bin/python benchmarks/scenic_vivit_parity.py run --scenic /tmp/scenic_src --out /tmp/scenic_vivit.npz

2. ``compare`` (this project's venv): converts the flax parameters into our modules (kernel
   transposes and reshapes only), runs them and prints the max |Δ logits| per case, plus our init
   statistics next to scenic's::

       .venv/bin/python benchmarks/scenic_vivit_parity.py compare /tmp/scenic_vivit.npz

The measured numbers are in ``docs/parity.md`` (ViViT).
"""

from __future__ import annotations

import argparse
import json
import sys
import types

import numpy as np

D, HEADS, MLP, LAYERS = 48, 3, 96, 3
#: (name, scenic builder kwargs, our ViViTConfig overrides, input [n, T, H, W, 3])
CASES = {
    "model1_token": dict(kind="vivit", classifier="token", ours=dict(classifier="token"), shape=(2, 8, 32, 32, 3)),
    "model1_gap": dict(kind="vivit", classifier="gap", ours=dict(classifier="gap"), shape=(2, 8, 32, 32, 3)),
    "model1_valid_remainder": dict(kind="vivit", classifier="token", ours=dict(classifier="token"), shape=(2, 9, 36, 36, 3)),
    "model2_gap": dict(
        kind="spacetime", classifier="gap", ours=dict(variant="factorised", classifier="gap"), shape=(2, 8, 32, 32, 3)
    ),
    "model2_token": dict(
        kind="spacetime", classifier="token", ours=dict(variant="factorised", classifier="token"), shape=(2, 8, 32, 32, 3)
    ),
    "tokenlearner_v11_at1": dict(
        kind="tokenlearner", loc=1, v11=True, fuser=False, ours=dict(num_tokens=4, tokenlearner_loc=1), shape=(2, 8, 32, 32, 3)
    ),
    "tokenlearner_v10_at2": dict(
        kind="tokenlearner",
        loc=2,
        v11=False,
        fuser=False,
        ours=dict(num_tokens=4, tokenlearner_loc=2, tokenlearner_version="v1.0"),
        shape=(2, 8, 32, 32, 3),
    ),
    "tokenlearner_fuser_at1": dict(
        kind="tokenlearner",
        loc=1,
        v11=True,
        fuser=True,
        ours=dict(num_tokens=4, tokenlearner_loc=1, use_fuser=True),
        shape=(2, 8, 32, 32, 3),
    ),
    "tokenlearner_at_depth": dict(
        kind="tokenlearner",
        loc=LAYERS,
        v11=True,
        fuser=False,
        ours=dict(num_tokens=4, tokenlearner_loc=LAYERS),
        shape=(2, 8, 32, 32, 3),
    ),
}
INIT_WIDTH = 192  # the init statistics are taken at this width (enough samples per tensor)


# ------------------------------------------------------------------------------------------------
# 1. scenic side (jax)
# ------------------------------------------------------------------------------------------------


def _import_scenic(path: str):
    sys.path.insert(0, path)
    tf = types.ModuleType("tensorflow")  # only scenic's checkpoint reader uses tensorflow.io.gfile
    tf.io = types.ModuleType("tensorflow.io")
    tf.io.gfile = types.ModuleType("tensorflow.io.gfile")
    sys.modules.update({"tensorflow": tf, "tensorflow.io": tf.io, "tensorflow.io.gfile": tf.io.gfile})
    from scenic.projects.token_learner import model as tl_model
    from scenic.projects.vivit import model as vivit_model

    return vivit_model, tl_model


def _scenic_module(case: dict, vivit_model, tl_model, width: int = D, heads: int = HEADS, mlp: int = MLP):
    import ml_collections

    cfg = ml_collections.ConfigDict
    patches = cfg({"size": (8, 8, 2)})  # scenic order: (h, w, t)
    temporal = cfg({"method": "3d_conv", "kernel_init_method": None})
    if case["kind"] == "vivit":
        return vivit_model.ViViT(
            mlp_dim=mlp,
            num_layers=LAYERS,
            num_heads=heads,
            num_classes=5,
            patches=patches,
            hidden_size=width,
            temporal_encoding_config=temporal,
            attention_config=cfg({"type": "spacetime"}),
            classifier=case["classifier"],
        )
    if case["kind"] == "spacetime":
        return vivit_model.SpaceTimeViViT(
            spatial_mlp_dim=mlp,
            spatial_num_layers=LAYERS,
            spatial_num_heads=heads,
            temporal_mlp_dim=mlp,
            temporal_num_layers=2,
            temporal_num_heads=heads,
            num_classes=5,
            patches=patches,
            hidden_size=width,
            temporal_encoding_config=temporal,
            attention_config=cfg({"type": "factorized_encoder"}),
            classifier=case["classifier"],
        )
    tokenizer = cfg(
        {
            "type": "video",
            "patches": patches,
            "temporal_encoding_config": temporal,
            "num_tokens": 4,
            "tokenlearner_loc": case["loc"],
            "use_v11": case["v11"],
            "use_tokenfuse": case["fuser"],
        }
    )
    return tl_model.TokenLearnerViT(
        num_classes=5,
        mlp_dim=mlp,
        num_layers=LAYERS,
        num_heads=heads,
        tokenizer=tokenizer,
        hidden_size=width,
        representation_size=None,
        classifier="gap",
    )


def _randomise(params: dict, rng: np.random.Generator) -> dict:
    """Every leaf random, kernels N(0, 1/fan_in) so activations stay of order 1."""
    from flax.traverse_util import flatten_dict, unflatten_dict

    flat = flatten_dict(params)
    out = {}
    for path, value in flat.items():
        shape, name = value.shape, path[-1]
        if name == "scale":
            new = rng.uniform(0.5, 1.5, shape)
        elif name == "bias":
            new = rng.normal(0, 0.05, shape)
        elif name == "kernel":
            fan_in = shape[0] if path[-2] in ("query", "key", "value") else int(np.prod(shape[:-1]))
            new = rng.normal(0, fan_in**-0.5, shape)
        else:  # cls tokens, position embeddings
            new = rng.normal(0, 0.5, shape)
        out[path] = new.astype(np.float32)
    return unflatten_dict(out)


def _init_stats(params: dict) -> dict[str, float]:
    """Std of scenic's own initial values for the tensors whose init we mirror."""
    from flax.traverse_util import flatten_dict

    flat = {"/".join(k): np.asarray(v) for k, v in flatten_dict(params).items()}
    b0 = "Transformer/encoderblock_0"
    return {
        "qkv_kernel": float(flat[f"{b0}/MultiHeadDotProductAttention_0/query/kernel"].std()),
        "attn_out_kernel": float(flat[f"{b0}/MultiHeadDotProductAttention_0/out/kernel"].std()),
        "attn_bias_abs_max": float(np.abs(flat[f"{b0}/MultiHeadDotProductAttention_0/query/bias"]).max()),
        "mlp_fc1_kernel": float(flat[f"{b0}/MlpBlock_0/Dense_0/kernel"].std()),
        "mlp_fc1_bias": float(flat[f"{b0}/MlpBlock_0/Dense_0/bias"].std()),
        "mlp_fc2_bias": float(flat[f"{b0}/MlpBlock_0/Dense_1/bias"].std()),
        "tubelet_kernel": float(flat["embedding/kernel"].std()),
        "tubelet_kernel_abs_max": float(np.abs(flat["embedding/kernel"]).max()),
        "pos_embed": float(flat["Transformer/posembed_input/pos_embedding"].std()),
    }


def run(scenic: str, out: str) -> None:
    import jax
    from flax.traverse_util import flatten_dict

    vivit_model, tl_model = _import_scenic(scenic)
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for name, case in CASES.items():
        module = _scenic_module(case, vivit_model, tl_model)
        video = rng.normal(0, 1, case["shape"]).astype(np.float32)
        params = _randomise(module.init(jax.random.PRNGKey(0), video, train=False)["params"], rng)
        logits = np.asarray(module.apply({"params": params}, video, train=False))
        arrays[f"{name}::input"], arrays[f"{name}::logits"] = video, logits
        for path, value in flatten_dict(params).items():
            arrays[f"{name}::param::" + "/".join(path)] = np.asarray(value)
        print(f"{name}: logits {logits.shape}, |logits| max {np.abs(logits).max():.3f}")
    wide = _scenic_module(CASES["model1_token"], vivit_model, tl_model, width=INIT_WIDTH, heads=3, mlp=4 * INIT_WIDTH)
    init = wide.init(jax.random.PRNGKey(1), np.zeros((1, 8, 32, 32, 3), np.float32), train=False)["params"]
    arrays["init_stats"] = np.frombuffer(json.dumps(_init_stats(init)).encode(), dtype=np.uint8)
    np.savez(out, **arrays)
    print(f"wrote {out} ({len(arrays)} arrays; jax {jax.__version__})")


# ------------------------------------------------------------------------------------------------
# 2. our side (torch)
# ------------------------------------------------------------------------------------------------


def _dense(p: dict, prefix: str):
    import torch

    return torch.from_numpy(p[f"{prefix}/kernel"]).T.contiguous(), torch.from_numpy(p[f"{prefix}/bias"])


def _block_state(p: dict, prefix: str, ours: str) -> dict:
    """One scenic encoder block (vivit EncoderBlock or baselines Encoder1DBlock, same parameters)."""
    import torch

    att = f"{prefix}/MultiHeadDotProductAttention_0"
    qkv_w = [torch.from_numpy(p[f"{att}/{n}/kernel"]).reshape(D, D).T for n in ("query", "key", "value")]
    qkv_b = [torch.from_numpy(p[f"{att}/{n}/bias"]).reshape(D) for n in ("query", "key", "value")]
    out = {
        f"{ours}.norm1.weight": torch.from_numpy(p[f"{prefix}/LayerNorm_0/scale"]),
        f"{ours}.norm1.bias": torch.from_numpy(p[f"{prefix}/LayerNorm_0/bias"]),
        f"{ours}.norm2.weight": torch.from_numpy(p[f"{prefix}/LayerNorm_1/scale"]),
        f"{ours}.norm2.bias": torch.from_numpy(p[f"{prefix}/LayerNorm_1/bias"]),
        f"{ours}.attn.qkv.weight": torch.cat(qkv_w),
        f"{ours}.attn.qkv.bias": torch.cat(qkv_b),
        f"{ours}.attn.proj.weight": torch.from_numpy(p[f"{att}/out/kernel"]).reshape(D, D).T.contiguous(),
        f"{ours}.attn.proj.bias": torch.from_numpy(p[f"{att}/out/bias"]),
    }
    for i, fc in enumerate(("fc1", "fc2")):
        out[f"{ours}.mlp.{fc}.weight"], out[f"{ours}.mlp.{fc}.bias"] = _dense(p, f"{prefix}/MlpBlock_0/Dense_{i}")
    return out


def _norm(p: dict, prefix: str, ours: str) -> dict:
    import torch

    return {f"{ours}.weight": torch.from_numpy(p[f"{prefix}/scale"]), f"{ours}.bias": torch.from_numpy(p[f"{prefix}/bias"])}


def _mlp(p: dict, prefix: str, ours: str) -> dict:
    out = {}
    for i, fc in enumerate(("fc1", "fc2")):
        out[f"{ours}.{fc}.weight"], out[f"{ours}.{fc}.bias"] = _dense(p, f"{prefix}/Dense_{i}")
    return out


def _tokenlearner_state(p: dict, prefix: str, ours: str, v11: bool) -> dict:
    import torch

    if v11:
        return {**_norm(p, f"{prefix}/LayerNorm_0", f"{ours}.norm"), **_mlp(p, f"{prefix}/token_masking", f"{ours}.mlp")}
    out = _norm(p, f"{prefix}/LayerNorm_0", f"{ours}.norm")
    for i in range(4):  # flax Conv [3, 3, in, out] -> torch [out, in, 3, 3]
        out[f"{ours}.convs.{i}.weight"] = torch.from_numpy(p[f"{prefix}/Conv_{i}/kernel"]).permute(3, 2, 0, 1).contiguous()
    return out


def _fuser_state(p: dict, prefix: str, ours: str) -> dict:
    out = {
        **_norm(p, f"{prefix}/fuser_mix_norm1", f"{ours}.norm1"),
        **_norm(p, f"{prefix}/fuser_mix_norm2", f"{ours}.norm2"),
        **_norm(p, f"{prefix}/LayerNorm_0", f"{ours}.norm_x"),
        **_mlp(p, f"{prefix}/token_masking", f"{ours}.mask"),
    }
    out[f"{ours}.mix.weight"], out[f"{ours}.mix.bias"] = _dense(p, f"{prefix}/Dense_0")
    return out


def to_ours(name: str, case: dict, p: dict) -> dict:
    """scenic parameters (flat ``a/b/c`` names) -> our state dict for ``case``."""
    import torch

    state = {
        "patch_embed.proj.weight": torch.from_numpy(p["embedding/kernel"]).permute(4, 3, 0, 1, 2).contiguous(),
        "patch_embed.proj.bias": torch.from_numpy(p["embedding/bias"]),
    }
    state["head.weight"], state["head.bias"] = _dense(p, "output_projection")
    if case["kind"] == "spacetime":
        pos_s = torch.from_numpy(p["SpatialTransformer/posembed_input/pos_embedding"])
        pos_t = torch.from_numpy(p["TemporalTransformer/posembed_input/pos_embedding"])
        if case["classifier"] == "token":
            state["cls_token"] = torch.from_numpy(p["cls_SpatialTransformer"])
            state["temporal_cls_token"] = torch.from_numpy(p["cls_TemporalTransformer"]) + pos_t[:, :1]  # CLS + its position
            pos_t = pos_t[:, 1:]
        state["pos_embed"], state["time_embed"] = pos_s, pos_t.unsqueeze(2)
        for i in range(LAYERS):
            state.update(_block_state(p, f"SpatialTransformer/encoderblock_{i}", f"encoder.blocks.{i}"))
        for i in range(2):
            state.update(_block_state(p, f"TemporalTransformer/encoderblock_{i}", f"temporal_encoder.{i}"))
        state.update(_norm(p, "SpatialTransformer/encoder_norm", "spatial_norm"))
        state.update(_norm(p, "TemporalTransformer/encoder_norm", "norm"))
        return state
    state["pos_embed"] = torch.from_numpy(p["Transformer/posembed_input/pos_embedding"])
    if case.get("classifier") == "token":
        state["cls_token"] = torch.from_numpy(p["cls"])
    for i in range(LAYERS):
        state.update(_block_state(p, f"Transformer/encoderblock_{i}", f"encoder.blocks.{i}"))
    state.update(_norm(p, "Transformer/encoder_norm", "norm"))
    if case["kind"] == "tokenlearner" and case["loc"] < LAYERS:
        tl_names = sorted({k.split("/")[1] for k in p if k.startswith("Transformer/TokenLearnerModule")})
        fuser_names = sorted({k.split("/")[1] for k in p if k.startswith("Transformer/TokenFuser")})
        if case["fuser"]:
            for j, (tl, tf) in enumerate(zip(tl_names, fuser_names)):
                state.update(_tokenlearner_state(p, f"Transformer/{tl}", f"encoder.token_learners.{j}", case["v11"]))
                state.update(_fuser_state(p, f"Transformer/{tf}", f"encoder.fusers.{j}"))
        else:
            state.update(_tokenlearner_state(p, f"Transformer/{tl_names[0]}", "encoder.token_learner", case["v11"]))
    return state


def compare(path: str) -> int:
    import torch

    from lw_lightning.models.vivit import ViViT, vivit_config

    data = np.load(path, allow_pickle=False)  # arrays only: a pickled object could run code
    print("| case | scenic input [n, T, H, W, 3] | max abs Δ logits | max abs logits |\n|---|---|---|---|")
    worst = 0.0
    for name, case in CASES.items():
        prefix = f"{name}::param::"
        params = {k[len(prefix) :]: data[k] for k in data.files if k.startswith(prefix)}
        video = data[f"{name}::input"]
        _n, t, h, _w, _ = video.shape
        cfg = vivit_config(
            "tiny",
            embed_dim=D,
            num_heads=HEADS,
            mlp_ratio=MLP / D,
            depth=LAYERS,
            temporal_depth=2,
            img_size=h,
            num_frames=t,
            **case["ours"],
        )
        model = ViViT(cfg, 5).eval()
        state = to_ours(name, case, params)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise SystemExit(f"{name}: conversion left missing {missing[:4]} / unexpected {unexpected[:4]}")
        with torch.no_grad():
            ours = model(torch.from_numpy(video).permute(0, 4, 1, 2, 3).contiguous()).numpy()
        diff = float(np.abs(ours - data[f"{name}::logits"]).max())
        worst = max(worst, diff)
        print(f"| {name} | {list(video.shape)} | {diff:.2e} | {np.abs(ours).max():.2f} |")
    scenic_init = json.loads(bytes(data["init_stats"]).decode())
    torch.manual_seed(1)
    wide = ViViT(vivit_config("tiny", embed_dim=INIT_WIDTH, num_heads=3, depth=LAYERS, classifier="token"), 5)
    block = wide.encoder.blocks[0]
    ours_init = {
        "qkv_kernel": block.attn.qkv.weight[:INIT_WIDTH].std().item(),
        "attn_out_kernel": block.attn.proj.weight.std().item(),
        "attn_bias_abs_max": block.attn.qkv.bias.abs().max().item(),
        "mlp_fc1_kernel": block.mlp.fc1.weight.std().item(),
        "mlp_fc1_bias": block.mlp.fc1.bias.std().item(),
        "mlp_fc2_bias": block.mlp.fc2.bias.std().item(),
        "tubelet_kernel": wide.patch_embed.proj.weight.std().item(),
        "tubelet_kernel_abs_max": wide.patch_embed.proj.weight.abs().max().item(),
        "pos_embed": wide.pos_embed.std().item(),
    }
    print(f"\n| init at width {INIT_WIDTH} (std unless named) | scenic | ours |\n|---|---|---|")
    for key, value in scenic_init.items():
        print(f"| {key} | {value:.3g} | {ours_init[key]:.3g} |")
    return 0 if worst <= 1e-5 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="scenic side, in a venv with jax / flax")
    r.add_argument("--scenic", required=True, help="folder holding scenic's source (the 'scenic' package inside)")
    r.add_argument("--out", required=True)
    c = sub.add_parser("compare", help="our side, in this project's venv")
    c.add_argument("npz")
    args = parser.parse_args()
    if args.cmd == "run":
        run(args.scenic, args.out)
        return 0
    return compare(args.npz)


if __name__ == "__main__":
    sys.exit(main())
