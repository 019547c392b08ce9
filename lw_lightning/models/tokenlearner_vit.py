"""Image ViT with TokenLearner (Ryoo et al., 2021), the ``arch: tokenlearner`` of ``ImageClassifier``.

Data flow::

    image (B,3,H,W) -> patch embedding (every patch) + posemb resampled to the H×W grid
    [CLS (+registers) ; N patch tokens] -> blocks 0 … L-1
    TokenLearner on the N patch tokens -> S learned tokens; the prefix tokens pass unchanged
    [CLS ; S tokens] -> blocks L … depth-1 -> final norm -> CLS (or mean over tokens) features

The backbone is the same timm ``VisionTransformer`` as the full-resolution ViT
(:class:`~lw_lightning.models.lookwhere.FullResViT`), built by the same helper, and TokenLearner,
TokenFuser and the block loop are :class:`~lw_lightning.models.tokenlearner.TokenLearnerEncoder`,
shared with ViViT. Unlike scenic's image TokenLearnerViT, the CLS token is kept (``pool: cls``): the
model starts from ViT checkpoints trained with one, and gets the same linear head on the CLS as the
full-res ViT and LookWhere, so a comparison differs only in how tokens are reduced. ``pool: gap``
gives scenic's mean over the output tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
from torch import Tensor

from .config import ModelConfig
from .tokenlearner import TokenLearnerEncoder
from .vit import embed_all, grid_pos_embed, patch_grid, prefix_tokens, vit_from_config


class TokenLearnerViT(nn.Module):
    """ViT with TokenLearner before block ``cfg.tokenlearner_block()``; no task head.

    ``backbone`` keeps timm's embedding, prefix tokens, posemb and final norm under timm names;
    its blocks live in ``encoder.blocks`` (so each parameter is stored once). :meth:`vit_state_dict`
    and :meth:`load_vit_state_dict` translate to and from the plain timm layout.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.arch != "tokenlearner":
            raise ValueError("TokenLearnerViT needs model.arch=tokenlearner")
        self.cfg = cfg
        self.backbone = vit_from_config(cfg)
        blocks = list(self.backbone.blocks)
        self.backbone.blocks = nn.Sequential()  # moved into the encoder, not shared (one state-dict key each)
        self.encoder = TokenLearnerEncoder(
            blocks,
            cfg.embed_dim,
            num_tokens=cfg.tokenlearner_tokens,
            loc=cfg.tokenlearner_block(),
            version=cfg.tokenlearner_version,
            use_fuser=cfg.tokenlearner_fuser,
            after_last=True,  # loc == depth with a GAP head: TokenLearner after the last block (documented image variant)
        )
        self.embed_dim = cfg.embed_dim
        self.num_prefix = self.backbone.num_prefix_tokens

    def grid(self, images: Tensor) -> tuple[int, int]:
        return patch_grid(self.backbone, (images.shape[-2], images.shape[-1]))

    def forward(
        self, images: Tensor, k: int | float | None = None, dense: bool = False, keep: Tensor | None = None
    ) -> dict[str, Tensor]:
        """``cls`` (B, D) classifier features, ``tokens`` (B, S or N, D) and ``prefix`` (B, P, D);
        ``maps`` (B, S, N): the first TokenLearner's attention over the patch grid (row-major).

        ``k`` and ``keep`` are ignored (the same call signature as the other archs)."""
        if dense:
            raise ValueError("arch tokenlearner has no per-patch (dense) output: use arch vit or lookwhere")
        vit = self.backbone
        grid = self.grid(images)
        patches = embed_all(vit, images) + grid_pos_embed(vit, grid)
        x = torch.cat([prefix_tokens(vit, images.shape[0]), patches], dim=1)
        x = vit.norm_pre(vit.pos_drop(x))
        x = vit.norm(self.encoder(x, temporal_dims=1, grid=grid, num_prefix=self.num_prefix))
        tokens = x[:, self.num_prefix :]
        cls = x[:, 0] if self.cfg.tokenlearner_pool == "cls" else tokens.mean(dim=1)
        out = {"cls": cls, "tokens": tokens, "prefix": x[:, : self.num_prefix]}
        maps = self.token_maps()
        if maps is not None:
            out["maps"] = maps
        return out

    def first_token_learner(self) -> nn.Module:
        enc = self.encoder
        return enc.token_learner if enc.token_learner is not None else enc.token_learners[0]

    def token_maps(self) -> Tensor | None:
        """``[B, S, N]`` attention maps of the first TokenLearner from the latest forward pass."""
        return getattr(self.first_token_learner(), "last_maps", None)

    def vit_state_dict(self) -> dict[str, Tensor]:
        """The ViT weights in timm's layout (``blocks.N.*`` back at the top level)."""
        state = dict(self.backbone.state_dict())
        state.update({f"blocks.{k}": v for k, v in self.encoder.blocks.state_dict().items()})
        return state

    def load_vit_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load timm-layout ViT weights (strict; keys as :meth:`vit_state_dict`). TokenLearner and
        TokenFuser keep their initialisation: they are trained from scratch."""
        blocks = {k[len("blocks.") :]: v for k, v in state.items() if k.startswith("blocks.")}
        rest = {k: v for k, v in state.items() if not k.startswith("blocks.")}
        self.backbone.load_state_dict(rest, strict=True)
        self.encoder.blocks.load_state_dict(blocks, strict=True)
