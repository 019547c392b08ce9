"""Optimizer groups (decay only on weight matrices, per-prefix lr scales) and the warmup-cosine schedule."""

from __future__ import annotations

import pytest
import torch

from lw_lightning.models.config import model_config
from lw_lightning.models.lookwhere import build_model
from lw_lightning.modules.optim import adamw_warmup_cosine, param_groups, warmup_cosine_factor


def _named(net):
    return [(f"net.{n}", p) for n, p in net.named_parameters()]


def test_decay_only_on_weight_matrices_and_frozen_parameters_skipped():
    net = build_model(model_config("tiny", arch="lookwhere", img_size=[56, 56], selector_img_size=28))
    net.selector.requires_grad_(False)
    groups = param_groups(_named(net), 0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    by_id = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    names = dict(_named(net))
    for name, p in names.items():
        # the selector is frozen here; the extractor's own CLS/register tokens are always unused
        if not p.requires_grad:
            assert id(p) not in by_id
        elif name.endswith(("pos_embed", "cls_token", "reg_token")) or p.ndim < 2:
            assert by_id[id(p)] == 0.0, name
        else:
            assert by_id[id(p)] == 0.05, name
    assert len(by_id) == sum(1 for p in names.values() if p.requires_grad)


def test_lr_scales_give_prefixed_parameters_their_own_lr_through_the_schedule():
    net = build_model(model_config("tiny", arch="lookwhere", img_size=[56, 56], selector_img_size=28))
    opt = adamw_warmup_cosine(
        _named(net), 1e-3, 0.05, total_steps=10, warmup=2, min_lr_ratio=0.01, lr_scales={"net.selector.": 0.1}
    )
    optimizer, sched = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    sel_ids = {id(p) for p in net.selector.parameters()}
    scaled = [g for g in optimizer.param_groups if any(id(p) in sel_ids for p in g["params"])]
    assert len(scaled) == 2 and all(all(id(p) in sel_ids for p in g["params"]) for g in scaled)
    assert {g["weight_decay"] for g in scaled} == {0.05, 0.0}
    for step in range(6):
        base = next(g["lr"] for g in optimizer.param_groups if g not in scaled)
        assert base == pytest.approx(1e-3 * warmup_cosine_factor(step, 2, 10, 0.01))
        assert all(g["lr"] == pytest.approx(0.1 * base) for g in scaled)
        optimizer.step()
        sched.step()
    with pytest.raises(ValueError, match="needs lr"):
        param_groups(_named(net), 0.05, lr_scales={"net.selector.": 0.1})


def test_classifier_selector_lr_scale_reaches_the_optimizer():
    from lw_lightning.modules.classification import ImageClassifier

    m = ImageClassifier(
        {"arch": "lookwhere", "preset": "tiny", "img_size": [56, 56], "selector_img_size": 28},
        num_classes=4,
        freeze_selector=False,
        selector_lr_scale=0.01,
    )
    m.trainer = type("T", (), {"estimated_stepping_batches": 10})()  # what configure_optimizers reads
    groups = m.configure_optimizers()["optimizer"].param_groups
    assert sorted({g["initial_lr"] for g in groups}) == pytest.approx([1e-5, 1e-3])
    assert torch.is_tensor(groups[0]["params"][0])
