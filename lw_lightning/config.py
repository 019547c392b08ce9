"""Config composition, validation and ``_target_`` instantiation (OmegaConf, no Hydra).

A run's config is built as follows:

1. every ``--config`` file is loaded; a file may name base files in ``_base_`` (paths relative to
   the file), which are merged first, recursively;
2. the files are merged left to right, then ``key=value`` overrides from the command line last;
3. OmegaConf interpolations are resolved once, on the final tree (so ``${data.num_classes}``
   sees a command-line override);
4. the tree is validated: top-level keys against :data:`TOP_LEVEL_KEYS`, every ``_target_`` node
   against the signature of what it names (unknown keys, wrong basic types), and nested
   dataclass-typed arguments against their fields.

Every user mistake raises :class:`ConfigError`, which the CLI prints as one line (exit status 2).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError  # re-exported: ``from lw_lightning.config import ConfigError`` keeps working

BASE_KEY = "_base_"
TARGET_KEY = "_target_"

#: Top-level keys a run config may hold, with a one-line meaning each (also used for suggestions).
TOP_LEVEL_KEYS: dict[str, str] = {
    "name": "run name: logs go to <output_dir>/<name>/version_N",
    "output_dir": "root folder of run directories",
    "seed": "global seed (None: not seeded)",
    "ckpt_path": "checkpoint to resume (fit) or evaluate (validate/test/predict)",
    "data": "LightningDataModule node",
    "module": "LightningModule node",
    "trainer": "pytorch_lightning.Trainer node",
    "callbacks": "mapping name -> callback node (null disables one)",
    "logger": "logger node, or null for none",
    "predict": "options of the predict command",
    "bench": "options of the bench command",
    "notes": "free text kept with the run",
    "requires": "hardware the recipe is sized for: 'gpu' warns at start when no CUDA device is used",
}

#: values the top-level ``requires`` key may take (null: runs anywhere)
REQUIREMENTS = ("gpu",)


# --------------------------------------------------------------------------------------------
# loading and composition
# --------------------------------------------------------------------------------------------


def _load_file(path: Path, stack: tuple[Path, ...] = ()) -> DictConfig:
    path = path.expanduser()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise ConfigError(f"config files include each other in a cycle: {chain}")
    try:
        cfg = OmegaConf.load(resolved)
    except Exception as err:  # yaml errors carry line numbers; keep the first line only
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"cannot parse config file {path}: {first}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    bases = cfg.pop(BASE_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    merged: list[DictConfig] = []
    for base in bases:
        merged.append(_load_file(resolved.parent / str(base), (*stack, resolved)))
    return OmegaConf.merge(*merged, cfg) if merged else cfg  # type: ignore[return-value]


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """Parse ``dotted.key=value`` strings (values typed as in YAML)."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' is not of the form dotted.key=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except Exception as err:  # omegaconf and yaml errors alike
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {first}") from None


def compose(paths: Sequence[str | Path], overrides: Sequence[str] = ()) -> DictConfig:
    """Merge config files and overrides without resolving or validating."""
    if not paths:
        raise ConfigError("no config given: pass --config FILE (see conf/)")
    parts = [_load_file(Path(p)) for p in paths]
    over = parse_overrides(overrides)
    _check_override_containers(parts, over)
    return OmegaConf.merge(*parts, over)  # type: ignore[return-value]


def _check_override_containers(parts: list[DictConfig], over: DictConfig) -> None:
    """Reject overrides that would silently replace a whole config node by a scalar."""
    base = OmegaConf.merge(*parts)
    for key in _leaf_keys(over):
        node: Any = base
        for piece in key.split("."):
            if not isinstance(node, DictConfig) or piece not in node:
                node = None
                break
            node = node._get_node(piece)
        if isinstance(node, DictConfig) and TARGET_KEY in node and OmegaConf.select(over, key) is not None:
            # (null is allowed: it disables a node, e.g. callbacks.images=null)
            raise ConfigError(
                f"'{key}' is a config node (_target_ {node[TARGET_KEY]}); set one of its keys, "
                f"e.g. {key}.{next(iter(k for k in node if k != TARGET_KEY), '...')}=..."
            )


def _leaf_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k in cfg:
        v = cfg._get_node(k)
        full = f"{prefix}{k}"
        if isinstance(v, DictConfig) and len(v) > 0:
            keys.extend(_leaf_keys(v, full + "."))
        else:
            keys.append(full)
    return keys


#: Mandatory (``???``) values an evaluation of a checkpoint does not need: left unset, they are null.
NOT_NEEDED_WITH_CKPT = ("module.model.pretrained",)


def load_config(
    paths: Sequence[str | Path], overrides: Sequence[str] = (), allow_missing: bool = False, evaluation: bool = False
) -> DictConfig:
    """Compose, resolve and validate a run config. Raises :class:`ConfigError` on mistakes.

    Values written ``???`` in a recipe are mandatory: left unset they are an error unless
    ``allow_missing`` (``--print-config``). With ``evaluation`` (validate/test/predict) and a
    ``ckpt_path``, the keys of :data:`NOT_NEEDED_WITH_CKPT` left unset become null: the checkpoint
    holds all weights, so a fine-tuning recipe evaluates without naming its pretrained file."""
    cfg = compose(paths, overrides)
    if evaluation and cfg.get("ckpt_path") is not None:
        for key in NOT_NEEDED_WITH_CKPT:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent)
            if isinstance(node, DictConfig) and OmegaConf.is_missing(node, leaf):  # ("in" is False for ???)
                node[leaf] = None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing and not allow_missing:
        raise ConfigError(f"missing mandatory value(s): {', '.join(missing)} (set e.g. {missing[0]}=...)")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot resolve interpolation: {str(err).splitlines()[0]}") from None
    validate(cfg)
    return cfg


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def suggest(name: str, candidates: Sequence[str], prefix: str = "") -> str:
    """Return ``" (did you mean 'prefix.x'?)"`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def validate(cfg: DictConfig) -> None:
    """Validate top-level keys and every ``_target_`` node (recursively)."""
    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"unknown key '{key}'{suggest(str(key), list(TOP_LEVEL_KEYS))}")
    for key in ("data", "module", "trainer"):
        node = cfg.get(key)
        if node is not None and not (isinstance(node, DictConfig) and TARGET_KEY in node):
            raise ConfigError(f"'{key}' must be a node with a _target_ key")
    requires = cfg.get("requires")
    if requires is not None and requires not in REQUIREMENTS:
        raise ConfigError(f"unknown value requires={requires!r}: expected one of {', '.join(REQUIREMENTS)} or null")
    callbacks = cfg.get("callbacks")
    if callbacks is not None and not isinstance(callbacks, DictConfig):
        raise ConfigError("'callbacks' must be a mapping name -> callback node")
    _validate_tree(cfg, "")


def _validate_tree(node: Any, path: str) -> None:
    if isinstance(node, DictConfig):
        if TARGET_KEY in node:
            validate_target_node(node, path)
        for k in node:
            if k == TARGET_KEY:
                continue
            _validate_tree(node._get_node(k), f"{path}.{k}" if path else str(k))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _validate_tree(item, f"{path}[{i}]")


def locate(name: str) -> Any:
    """Import ``package.module.Attr`` (also nested attributes) and return it."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as err:
            # only swallow "this prefix is not a module"; a missing dependency inside it is real
            if err.name and not ".".join(parts[:cut]).startswith(err.name):
                raise
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ConfigError(f"_target_ '{name}' cannot be imported")


def _signature_params(target: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    fn = target.__init__ if inspect.isclass(target) else target
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: check names only
        hints = {}
    params = {n: p for n, p in sig.parameters.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    var_kw = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    return params, hints, var_kw


def validate_target_node(node: DictConfig, path: str) -> None:
    """Check a ``_target_`` node's keys and simple value types against the target's signature."""
    where = f"{path}." if path else ""
    target = locate(str(node[TARGET_KEY]))
    params, hints, var_kw = _signature_params(target)
    for key in node:
        if key == TARGET_KEY:
            continue
        key = str(key)
        if key not in params:
            if var_kw:
                continue
            raise ConfigError(f"unknown key '{where}{key}'{suggest(key, list(params), where)} for {node[TARGET_KEY]}")
        value = node._get_node(key)
        if isinstance(value, DictConfig) and TARGET_KEY in value:
            continue  # nested node: validated on its own
        hint = hints.get(key, inspect.Parameter.empty)
        plain = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value._value()
        schema = _dataclass_in(hint)
        if schema is not None and isinstance(plain, dict):
            check_dataclass_dict(schema, plain, f"{where}{key}")
            continue
        if hint is not inspect.Parameter.empty and _type_ok(plain, hint) is False:
            raise ConfigError(f"wrong type for '{where}{key}': expected {_type_name(hint)}, got {plain!r}")


def _dataclass_in(hint: Any) -> type | None:
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None


def check_dataclass_dict(schema: type, values: Mapping[str, Any], path: str) -> None:
    """Validate a plain dict against a dataclass's fields (names and simple types)."""
    hints = typing.get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown key '{path}.{key}'{suggest(str(key), names, path + '.')} for {schema.__name__}")
        sub = _dataclass_in(hints[key])
        if sub is not None and isinstance(value, Mapping):
            check_dataclass_dict(sub, value, f"{path}.{key}")
        elif _type_ok(value, hints[key]) is False:
            raise ConfigError(f"wrong type for '{path}.{key}': expected {_type_name(hints[key])}, got {value!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _type_ok(value: Any, hint: Any) -> bool | None:
    """True / False when the value does / does not fit ``hint``; None when we cannot tell."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        results = [_type_ok(value, a) for a in typing.get_args(hint)]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (dict, hint))
    if value is None:
        return False
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if len(args) == 1:
            results = [_type_ok(v, args[0]) for v in value]
            return False if any(r is False for r in results) else True
        return True
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, dict)
    return None


# --------------------------------------------------------------------------------------------
# instantiation
# --------------------------------------------------------------------------------------------


def to_plain(value: Any) -> Any:
    """Convert OmegaConf containers to plain python containers (other values unchanged)."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def instantiate(node: Any, **extra: Any) -> Any:
    """Build the object a ``_target_`` node describes; nested ``_target_`` nodes are built first.

    ``extra`` keyword arguments are passed as well (and win over the node's keys).
    """
    plain = to_plain(node)
    return _build(plain, extra)


def _build(value: Any, extra: Mapping[str, Any] | None = None) -> Any:
    if isinstance(value, dict):
        if TARGET_KEY in value:
            target = locate(value[TARGET_KEY])
            kwargs = {k: _build(v) for k, v in value.items() if k != TARGET_KEY}
            kwargs.update(extra or {})
            return target(**kwargs)
        return {k: _build(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_build(v) for v in value]
    return value


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML text (what ``--print-config`` prints and runs save)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
