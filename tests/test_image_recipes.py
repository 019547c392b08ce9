"""Every image recipe in conf/experiment runs fit (fast_dev_run) on a tiny copy through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from lw_lightning.cli import main
from lw_lightning.config import load_config
from lw_lightning.data import ade20k, imagenet, traffic_signs

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "conf" / "experiment"

# recipe -> dataset; the list is explicit so a deleted or renamed recipe fails here
RECIPES = {
    "lookwhere_in1k_224_k128": "imagenet",
    "vit_in1k_224": "imagenet",
    "lookwhere_ade20k_518_k1024": "ade20k",
    "lookwhere_ade20k_518_k512": "ade20k",
    "vit_ade20k_518": "ade20k",
    "lookwhere_sts_994_k5": "traffic_signs",
    "lookwhere_sts_994_k10": "traffic_signs",
    "lookwhere_sts_native_k10": "traffic_signs",
    "vit_sts_994": "traffic_signs",
    "vit_sts_native": "traffic_signs",
}
# the TokenLearner family (issue 14): recipe -> (dataset, preset, img side, tokens, insertion fraction)
TOKENLEARNER_RECIPES = {
    "vit_b16_in1k_224": ("imagenet", "vit_b16", 224, None, None),
    "tokenlearner_b16_in1k_224_tl8_at25": ("imagenet", "vit_b16", 224, 8, 0.25),
    "tokenlearner_b16_in1k_224_tl8_at50": ("imagenet", "vit_b16", 224, 8, 0.5),
    "tokenlearner_b16_in1k_224_tl8_at75": ("imagenet", "vit_b16", 224, 8, 0.75),
    "tokenlearner_l16_in1k_512_tl16_at50": ("imagenet", "vit_l16", 512, 16, 0.5),
    "tokenlearner_sts_994_tl16_at25": ("traffic_signs", "base", 994, 16, 0.25),
}
ALL_RECIPES = {**RECIPES, **{name: spec[0] for name, spec in TOKENLEARNER_RECIPES.items()}}
SMALL = 56  # tiny-model input side (a multiple of 14)


@pytest.fixture(scope="module")
def tiny_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tiny")
    return {
        "imagenet": imagenet.make_tiny(base / "imagenet", "kaggle", per_class=1, val_per_class=1),
        "ade20k": ade20k.make_tiny(base / "ade", n_train=2, n_val=2, scale=0.3),
        "traffic_signs": traffic_signs.make_tiny(base / "sts", size=(84, 112), n_set1=16, n_set2=10),
    }


def overrides(recipe: str, dataset: str, root: Path, out: Path) -> list[str]:
    cfg = load_config(EXPERIMENTS / f"{recipe}.yaml")
    common = [
        f"output_dir={out}",
        f"trainer.default_root_dir={out}",  # fast_dev_run has no logger: checkpoints go here
        f"data.root={root}",
        "data.num_workers=0",
        "data.pin_memory=false",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "module.model.preset=tiny",
        "module.model.selector_img_size=28",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.fast_dev_run=true",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    if dataset == "imagenet":
        size = [SMALL, SMALL]
        common += [f"data.image_size={SMALL}"]
    elif dataset == "ade20k":
        size = [SMALL, SMALL]
        common += [f"data.crop_size={SMALL}", f"data.scale=[{4 * SMALL},{SMALL}]"]
    elif cfg.data.image_size is None:  # native resolution: 84x112 padded to multiples of 14
        size = [84, 112]
    else:
        size = [SMALL, SMALL]
        common += [f"data.image_size={SMALL}"]
    n = (size[0] // 14) * (size[1] // 14)  # patches of the tiny input (tiny preset: patch 14)
    for key in ("train_k", "eval_k"):
        k = cfg.module.get(key)
        if isinstance(k, int) and not isinstance(k, bool) and k > n:
            # the paper's counts (128..1024) exceed the tiny input's patches: an error, not capped
            common.append(f"module.{key}={n // 2}")
    return common + [f"module.model.img_size=[{size[0]},{size[1]}]"]


def test_recipe_set_is_complete() -> None:
    mine = {p.stem for p in EXPERIMENTS.glob("*.yaml") if p.stem.startswith(("lookwhere_", "vit_", "tokenlearner_"))}
    assert mine == set(ALL_RECIPES)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_keeps_the_papers_settings(recipe: str) -> None:
    cfg = load_config(EXPERIMENTS / f"{recipe}.yaml")
    model = cfg.module.model
    assert model.preset == "base" and model.arch == ("vit" if recipe.startswith("vit") else "lookwhere")
    expected_size = {
        "in1k": [224, 224],
        "ade20k": [518, 518],
        "sts_994": [994, 994],
        "sts_native": [966, 1288],
    }
    key = next(k for k in expected_size if f"_{k}" in recipe)
    assert list(model.img_size) == expected_size[key]
    expected_k = {"k128": 128, "k1024": 1024, "k512": 512, "k5": 0.05, "k10": 0.1}
    suffix = recipe.rsplit("_", 1)[-1]
    if recipe.startswith("lookwhere"):
        assert cfg.module.train_k == cfg.module.eval_k == expected_k[suffix]
    if "sts" in recipe:
        assert cfg.data.image_size == (None if "native" in recipe else 994)


@pytest.mark.parametrize("recipe", sorted(TOKENLEARNER_RECIPES))
def test_tokenlearner_recipe_settings(recipe: str) -> None:
    dataset, preset, side, tokens, fraction = TOKENLEARNER_RECIPES[recipe]
    cfg = load_config(EXPERIMENTS / f"{recipe}.yaml")
    model = cfg.module.model
    assert model.preset == preset and list(model.img_size) == [side, side] and cfg.requires == "gpu"
    assert cfg.data.image_size == side
    if tokens is None:
        assert model.arch == "vit"
    else:
        assert model.arch == "tokenlearner" and model.tokenlearner_tokens == tokens and model.tokenlearner_loc == fraction
        assert model.tokenlearner_version == "v1.1" and not model.get("tokenlearner_fuser", False)
    if dataset == "traffic_signs":  # next to the LookWhere STS recipes: their schedule and backbone
        lw = load_config(EXPERIMENTS / "lookwhere_sts_994_k5.yaml")
        assert (cfg.module.lr, cfg.trainer.max_epochs, lw.module.model.preset) == (lw.module.lr, lw.trainer.max_epochs, preset)


@pytest.mark.parametrize("recipe", sorted(ALL_RECIPES))
def test_recipe_fast_dev_run_on_tiny_copy(recipe: str, tiny_roots: dict[str, Path], tmp_path: Path, capsys) -> None:
    dataset = ALL_RECIPES[recipe]
    argv = ["fit", f"experiment={recipe}", *overrides(recipe, dataset, tiny_roots[dataset], tmp_path)]
    code = main(argv)
    assert code == 0, capsys.readouterr().err[-2000:]


@pytest.mark.parametrize("dataset", ["imagenet", "ade20k", "traffic_signs"])
def test_missing_data_root_exits_2_with_one_line(dataset: str, tmp_path: Path, capsys) -> None:
    recipe = next(r for r, d in RECIPES.items() if d == dataset)
    argv = ["fit", f"experiment={recipe}", *overrides(recipe, dataset, tmp_path / "nowhere", tmp_path / "runs")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0] and "expected" in err[0] and "does not exist" in err[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))
