"""Run configs: Hydra composition of ``conf/`` plus the checks Hydra does not make.

A run's config is ``conf/run.yaml`` (defaults: ``trainer/``, ``logger/``, ``callbacks/``) plus a
recipe ``experiment=<name>`` (which may select a ``data/`` option) plus ``launch=<name>``, then
``key=value`` overrides, composed by Hydra. Before Hydra composes, every override is checked here,
without importing torch or Lightning (see :mod:`lw_lightning.signatures`):

- a group option that does not exist (``experiment=demo_vt``) is one line with a suggestion;
- a key that the composed YAML does not hold is checked against what the node it lands in accepts
  (the ``__init__`` of its ``_target_``, the fields of a dataclass-typed argument, the top-level
  keys): accepted keys are passed to Hydra as ``++key=value`` (Hydra alone would demand ``+``),
  others are "unknown key ... (did you mean ...)".

After composition :func:`finalize` fills what evaluation does not need, rejects unset ``???``
values, resolves interpolations once on the final tree (so ``${data.image_size}`` sees an override)
and validates every ``_target_`` node against its signature (unknown keys, simple types). Every
mistake raises :class:`ConfigError`, which the CLI prints as one line (exit status 2).
"""

from __future__ import annotations

import difflib
import itertools
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import signatures
from .errors import ConfigError  # re-exported: ``from lw_lightning.config import ConfigError`` keeps working

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
RUN_CONFIG = "run"  # primary config of fit / validate / test / predict
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
    "notes": "free text kept with the run",
    "requires": "hardware the recipe is sized for: 'gpu' warns at start when no CUDA device is used",
    "smoke": "true: the recipe as a CPU smoke test of its data path (tiny random model, 2 batches; lw_lightning/smoke.py)",
}

#: values the top-level ``requires`` key may take (null: runs anywhere)
REQUIREMENTS = ("gpu",)

#: Mandatory (``???``) values an evaluation of a checkpoint does not need: left unset, they are null.
NOT_NEEDED_WITH_CKPT = ("module.model.pretrained",)


def suggest(name: str, candidates: Sequence[str], prefix: str = "") -> str:
    """Return ``" (did you mean 'prefix.x'?)"`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# --------------------------------------------------------------------------------------------
# overrides: parsing, groups, sweeps
# --------------------------------------------------------------------------------------------


def _quoting_hint(overrides: Sequence[str], i: int) -> str:
    """How to quote the value of ``overrides[i]`` that Hydra could not parse, as a shell word. A word
    without '=' after a ``key=value`` is most likely the rest of a value the shell split at a space;
    a value with quotes, brackets, ``~`` or non-ASCII letters must be quoted for Hydra too."""
    item = overrides[i]
    if "=" not in item and i > 0 and "=" in overrides[i - 1]:
        key, value = overrides[i - 1].split("=", 1)
        quoted = _hydra_quoted(key, f"{value} {item}")
        return f"; if it is the rest of {key}'s value, the shell split it at a space: quote it, {quoted}"
    key, sep, value = item.partition("=")
    # a value meant as Hydra syntax (quoted, a list, a dict, an interpolation, a sweep function) gets no hint
    if not sep or value.lstrip()[:1] in ("'", '"', "[", "{", "$") or re.match(r"\s*\w+\(", value):
        return ""
    return f"; quote the value for Hydra, inside the shell's quotes: {_hydra_quoted(key, value)}"


def _hydra_quoted(key: str, value: str) -> str:
    """``key="value"`` (Hydra's quoted string, which takes any character but an unescaped quote), as
    one shell word."""
    inner = value.strip().replace('"', '\\"')
    return shlex.quote(f'{key.strip()}="{inner}"')


def parse_overrides(overrides: Sequence[str]) -> list[Any]:
    """Hydra's parse of ``key=value`` strings (one-line ConfigError for a syntax error)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parsed = []
    parser = OverridesParser.create()
    for i, item in enumerate(overrides):
        try:
            parsed += parser.parse_overrides([item])
        except HydraException as err:
            raise ConfigError(f"cannot parse override '{item}': {_first_line(err)}{_quoting_hint(overrides, i)}") from None
    return parsed


def group_options(group: str, dirs: Sequence[Path]) -> list[str] | None:
    """Options of config group ``group`` (None: not a group)."""
    found = [d / group for d in dirs if (d / group).is_dir()]
    if not found:
        return None
    return sorted({p.stem for folder in found for p in folder.rglob("*.yaml")})


def _check_group_choice(group: str, values: list[str], dirs: Sequence[Path]) -> None:
    options = group_options(group, dirs) or []
    for value in values:
        if value in ("null", "None") or value in options:
            continue
        raise ConfigError(
            f"unknown {group} '{value}'{suggest(value, options)}: choose one of {', '.join(options)} (conf/{group}/)"
        )


def _values(override: Any) -> list[str]:
    """The value strings an override stands for (several for a sweep)."""
    if override.is_sweep_override():
        if not override.is_discrete_sweep():
            raise ConfigError(f"'{override.input_line}': only lists and ranges can be swept here")
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def expand_sweep(overrides: Sequence[str], multirun: bool) -> list[list[str]]:
    """The override lists of every job (one without ``-m``), as Hydra's basic sweeper forms them:
    the cartesian product of the swept values, in order."""
    parsed = parse_overrides(overrides)
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if sweeps and not multirun:
        raise ConfigError(f"'{sweeps[0].input_line}' sweeps several values: add -m (multirun), or write a list as [a,b]")
    choices = []
    for o in parsed:
        if o.is_sweep_override():
            choices.append([f"{o.get_key_element()}={v}" for v in _values(o)])
        else:
            choices.append([o.input_line])
    return [list(job) for job in itertools.product(*choices)]


# --------------------------------------------------------------------------------------------
# which keys a node accepts
# --------------------------------------------------------------------------------------------


def _target_signature(node: Any) -> signatures.Signature | None:
    if isinstance(node, DictConfig) and TARGET_KEY in node and isinstance(node._get_node(TARGET_KEY)._value(), str):
        return signatures.signature(str(node[TARGET_KEY]))
    return None


def _schema_fields(target: str) -> dict[str, tuple[signatures.Module, Any]] | None:
    found = signatures.resolve(target)
    if found is None or found[1] != "class":
        return None
    return signatures.dataclass_fields(found[0], found[2])


def _child_schema(module: signatures.Module, ann: Any, value: Any) -> tuple[signatures.Module, Any] | None:
    """The dataclass ``(module, ClassDef)`` a mapping under annotation ``ann`` must follow."""
    plain = OmegaConf.to_container(value) if isinstance(value, DictConfig) else value
    if not isinstance(plain, dict):
        return None
    return signatures.check(plain, module, ann).schema


def accepted_keys(cfg: DictConfig, parts: Sequence[str], schemas: Mapping[str, str] | None = None) -> list[str] | None:
    """Keys the node at ``parts`` may hold (None: any, or cannot tell). Walks from the root: the
    top level, ``_target_`` signatures, and dataclass-typed arguments and their fields.

    ``schemas``: None for a run config (its top level: :data:`TOP_LEVEL_KEYS`); for the primary
    config of another command (:func:`lw_lightning.cli.run_command`), its top-level keys typed by a
    dataclass, ``{key: "package.module.Class"}`` (read from source, not imported): the top level
    then accepts these keys, whose nodes accept the dataclass's fields."""
    allowed: list[str] | None = list(TOP_LEVEL_KEYS) if schemas is None else list(schemas)
    schemas = schemas or {}
    fields: dict[str, tuple[signatures.Module, Any]] | None = None  # of the node being walked
    node: Any = cfg
    for depth, part in enumerate(parts):
        if depth == 0 and part in schemas:
            child_fields = _schema_fields(schemas[part])
        elif fields is not None and part in fields:
            schema = _child_schema(*fields[part], node._get_node(part) if isinstance(node, DictConfig) else None)
            child_fields = signatures.dataclass_fields(*schema) if schema else None
        else:
            child_fields = None
        node = node._get_node(part) if isinstance(node, DictConfig) else None
        sig = _target_signature(node)
        fields = (None if sig.var_kw else dict(sig.params)) if sig is not None else child_fields
        allowed = list(fields) if fields is not None else None
        if node is None:
            return None
    return allowed


def _exists(cfg: DictConfig, parts: Sequence[str]) -> int:
    """How many leading parts of the dotted key exist in ``cfg`` (``???`` values exist)."""
    node: Any = cfg
    for i, part in enumerate(parts):
        if isinstance(node, DictConfig) and node._get_node(part) is not None:
            node = node._get_node(part)
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
        else:
            return i
    return len(parts)


def _smoke_switch(parsed: Sequence[Any]) -> bool:
    """Whether the overrides turn ``smoke`` on (the last ``smoke=`` counts); one-line errors for
    a value that is not true/false and for a sweep of it."""
    on = False
    for o in parsed:
        if o.key_or_group != "smoke" or o.is_hydra_override() or o.is_delete():
            continue
        if o.is_sweep_override():
            raise ConfigError(f"'{o.input_line}': smoke cannot be swept (it changes the recipe); run smoke=true on its own")
        value = o.value()
        if not isinstance(value, bool):
            raise ConfigError(f"smoke={o.get_value_element_as_str()}: expected true or false")
        on = value
    return on


def prepare_overrides(
    overrides: Sequence[str],
    config_name: str = RUN_CONFIG,
    dirs: Sequence[Path] = (CONF_DIR,),
    schemas: Mapping[str, str] | None = None,
) -> list[str]:
    """Check ``overrides`` and return them as Hydra should get them: group options exist, keys the
    recipe does not hold become ``++key=value`` when their node accepts them (else ConfigError).
    ``smoke=true`` adds the recipe's smoke overrides (:mod:`lw_lightning.smoke`) before the others.
    ``schemas``: None for a run config; for another command's primary config, see :func:`accepted_keys`
    (``smoke`` is then not a key of it)."""
    parsed = parse_overrides(overrides)
    smoke = schemas is None and _smoke_switch(parsed)
    base_overrides, plain = [], []
    rewritten: dict[int, str] = {}
    for o in parsed:
        key = o.key_or_group
        if o.is_hydra_override() or o.is_delete() or o.is_add() or o.is_force_add():
            base_overrides.append(_first_job_line(o))
        elif group_options(key, dirs) is not None and not isinstance(o.value(), dict):
            _check_group_choice(key, _values(o), dirs)
            if not o.is_sweep_override() and o.value() is None:  # logger=null: Hydra deselects a group with ~logger
                rewritten[id(o)] = f"~{key}"
            base_overrides.append(rewritten.get(id(o), _first_job_line(o)))
        else:
            plain.append(o)
    if not plain:
        return [rewritten.get(id(o), o.input_line) for o in parsed]
    # a callback added on the command line names its class: callbacks.NAME._target_=...
    new_nodes = {
        o.key_or_group.rpartition(".")[0]
        for o in plain
        if o.key_or_group.startswith("callbacks.") and o.key_or_group.endswith("._target_")
    }
    base = compose(config_name, base_overrides, dirs)
    if smoke:
        swept = next((o for o in parsed if all(o is not p for p in plain) and o.is_sweep_override()), None)
        if swept is not None:
            raise ConfigError(
                f"'{swept.input_line}': smoke=true shrinks one recipe at a time; sweep {swept.key_or_group} without it"
            )
        from .smoke import smoke_overrides

        # before the command line's own overrides, which win
        extra = parse_overrides(smoke_overrides(base))
        parsed, plain = [*extra, *parsed], [*extra, *plain]
    OmegaConf.set_struct(base, False)  # (struct mode raises on a missing key where we look)
    for o in plain:
        parts = o.key_or_group.split(".")
        have = _exists(base, parts)
        if have == len(parts):
            continue
        parent = parts[:have]
        missing = parts[have]
        where = ".".join(parent) + "." if parent else ""
        node = OmegaConf.select(base, ".".join(parent)) if parent else base
        if parent and not isinstance(node, (DictConfig, ListConfig)):
            raise ConfigError(f"unknown key '{o.key_or_group}': '{'.'.join(parent)}' is a value, not a node")
        allowed = accepted_keys(base, parent, schemas)
        if allowed is not None and missing not in allowed:
            existing = [str(k) for k in node] if isinstance(node, DictConfig) else []
            target = f" for {node[TARGET_KEY]}" if isinstance(node, DictConfig) and TARGET_KEY in node else ""
            hint = suggest(missing, [*allowed, *existing], where)
            raise ConfigError(f"unknown key '{where}{missing}'{hint}{target}")
        if allowed is None and parent == ["callbacks"] and f"callbacks.{missing}" not in new_nodes:
            names = [str(k) for k in node] if isinstance(node, DictConfig) else []
            raise ConfigError(
                f"unknown callback '{missing}'{suggest(missing, names, 'callbacks.')}: a new one needs its class, "
                f"callbacks.{missing}._target_=package.module.Class"
            )
        rewritten[id(o)] = f"++{o.input_line}"
    return [rewritten.get(id(o), o.input_line) for o in parsed]


def _first_job_line(o: Any) -> str:
    """The override as one job of a sweep sees it first (the override itself if not a sweep)."""
    if o.is_sweep_override():
        return f"{o.get_key_element()}={_values(o)[0]}"
    return o.input_line


# --------------------------------------------------------------------------------------------
# composition
# --------------------------------------------------------------------------------------------


def compose(config_name: str, overrides: Sequence[str], dirs: Sequence[Path] = (CONF_DIR,)) -> DictConfig:
    """Hydra's composition of ``<dirs[0]>/<config_name>.yaml`` with ``overrides`` (unresolved, not
    validated). Usable inside a running Hydra app (its global state is restored afterwards)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    extra = [f"hydra.searchpath=[{','.join('file://' + str(Path(d).resolve()) for d in dirs[1:])}]"] if len(dirs) > 1 else []
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(Path(dirs[0]).resolve()), version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=[*overrides, *extra])
    except (HydraException, OmegaConfBaseException) as err:
        cause = err.__cause__
        detail = f"{_first_line(err)}" + (f" ({_first_line(cause)})" if isinstance(cause, OmegaConfBaseException) else "")
        raise ConfigError(f"cannot compose the config: {detail}") from None
    finally:
        restore_gh_from_backup(backup)
    return cfg


def finalize(cfg: DictConfig, allow_missing: bool = False, evaluation: bool = False, validate_tree: bool = True) -> DictConfig:
    """Complete a composed config: unset ``???`` not needed by an evaluation become null, missing
    mandatory values are an error (unless ``allow_missing``), interpolations are resolved and the
    tree is validated. Returns a copy that is no longer in struct mode."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    if evaluation and cfg.get("ckpt_path") is not None:
        for key in NOT_NEEDED_WITH_CKPT:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent)
            if isinstance(node, DictConfig) and OmegaConf.is_missing(node, leaf):  # ("in" is False for ???)
                node[leaf] = None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing and not allow_missing:
        raise ConfigError(f"missing mandatory value(s): {', '.join(missing)} (set e.g. {missing[0]}=...)")
    if not missing:
        try:
            OmegaConf.resolve(cfg)
        except OmegaConfBaseException as err:
            raise ConfigError(f"cannot resolve interpolation: {_first_line(err)}") from None
    if validate_tree:
        validate(cfg)
    return cfg


def check_writable_dir(path: str | Path, what: str) -> None:
    """One-line :class:`ConfigError` unless ``path`` is a folder this process can write in, or can
    be created: the nearest existing ancestor is probed with a temporary file (which also catches a
    read-only file system, where the permission bits alone would say yes to root)."""
    import tempfile

    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"cannot write {what} {path}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(f"cannot write {what} {path}: {existing}: {err.strerror or err}") from None


def recipe_source(recipe: str | Path | None) -> tuple[str, list[str], list[Path]]:
    """(config name, overrides, search dirs) for a recipe name, a recipe file under
    ``conf/experiment/``, or any other YAML file (e.g. a run's saved ``config.yaml``), which is then
    composed as the primary config."""
    if recipe is None:
        return RUN_CONFIG, [], [CONF_DIR]
    text = str(recipe)
    if not text.endswith((".yaml", ".yml")) and "/" not in text:
        return RUN_CONFIG, [f"experiment={text}"], [CONF_DIR]
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    folder = path.resolve().parent
    if folder == (CONF_DIR / "experiment").resolve():
        return RUN_CONFIG, [f"experiment={path.stem}"], [CONF_DIR]
    if folder.name == "experiment":  # a recipe of another config dir (as with --config-dir)
        return RUN_CONFIG, [f"experiment={path.stem}"], [CONF_DIR, folder.parent]
    return path.stem, [], [folder]


def load_config(
    recipe: str | Path | None, overrides: Sequence[str] = (), allow_missing: bool = False, evaluation: bool = False
) -> DictConfig:
    """Compose, resolve and validate the config of one run (what the CLI does before it runs).

    ``recipe``: an experiment name (``"demo_vit"``), its file (also one in the ``experiment/``
    folder of another config dir, as ``--config-dir`` adds), a saved run ``config.yaml``, or None
    (then ``overrides`` should hold ``experiment=...``). Values written ``???`` are mandatory unless
    ``allow_missing``; with ``evaluation`` and a ``ckpt_path``, :data:`NOT_NEEDED_WITH_CKPT` may stay
    unset. Raises :class:`ConfigError` on mistakes."""
    name, first, dirs = recipe_source(recipe)
    prepared = prepare_overrides([*first, *overrides], name, dirs)
    return finalize(compose(name, prepared, dirs), allow_missing=allow_missing, evaluation=evaluation)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def validate(cfg: DictConfig) -> None:
    """Validate top-level keys and every ``_target_`` node (recursively)."""
    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"unknown key '{key}'{suggest(str(key), list(TOP_LEVEL_KEYS))}")
    for key in ("data", "module", "trainer"):
        node = cfg.get(key)
        if node is None:
            raise ConfigError(f"no '{key}' node: choose a recipe with experiment=<name> (see conf/experiment/)")
        if not (isinstance(node, DictConfig) and TARGET_KEY in node):
            raise ConfigError(f"'{key}' must be a node with a _target_ key")
    requires = cfg.get("requires")
    if requires is not None and requires not in REQUIREMENTS:
        raise ConfigError(f"unknown value requires={requires!r}: expected one of {', '.join(REQUIREMENTS)} or null")
    smoke = cfg.get("smoke")
    if smoke is not None and not isinstance(smoke, bool):
        raise ConfigError(f"smoke={smoke!r}: expected true or false")
    if smoke and cfg.get("ckpt_path") is not None:
        raise ConfigError(
            f"smoke=true builds a tiny random model, which cannot load ckpt_path={cfg.ckpt_path}: drop one of them "
            "(to check a checkpoint quickly, limit the batches instead, e.g. trainer.limit_test_batches=2)"
        )
    callbacks = cfg.get("callbacks")
    if callbacks is not None:
        if not isinstance(callbacks, DictConfig):
            raise ConfigError("'callbacks' must be a mapping name -> callback node")
        for name in callbacks:
            node = callbacks._get_node(name)
            if not (node._is_none() or (isinstance(node, DictConfig) and TARGET_KEY in node)):
                raise ConfigError(f"'callbacks.{name}' must be a callback node with a _target_ key, or null to disable it")
    _validate_tree(cfg, "")


def _validate_tree(node: Any, path: str) -> None:
    if isinstance(node, DictConfig):
        if TARGET_KEY in node:
            validate_target_node(node, path)
        for k in node:
            if k != TARGET_KEY:
                _validate_tree(node._get_node(k), f"{path}.{k}" if path else str(k))
    elif isinstance(node, ListConfig):
        for i, _item in enumerate(node):
            _validate_tree(node._get_node(i), f"{path}[{i}]")


def validate_target_node(node: DictConfig, path: str) -> None:
    """Check a ``_target_`` node's keys and simple value types against the target's signature."""
    where = f"{path}." if path else ""
    target = str(node[TARGET_KEY])
    sig = signatures.signature(target)
    if sig is None:
        if signatures.find_module(target.split(".")[0]) is None:
            raise ConfigError(f"_target_ '{target}' at '{path}' cannot be found (no module {target.split('.')[0]!r})")
        return  # defined in a way that cannot be read statically: Hydra's instantiate will tell
    for key in node:
        key = str(key)
        if key.startswith("_") and key.endswith("_"):  # Hydra's _recursive_, _convert_, _partial_, _args_
            continue
        if key not in sig.params:
            if sig.var_kw:
                continue
            raise ConfigError(f"unknown key '{where}{key}'{suggest(key, list(sig.params), where)} for {target}")
        value = node._get_node(key)
        if isinstance(value, DictConfig) and TARGET_KEY in value:
            continue  # nested node: validated on its own
        module, ann = sig.params[key]
        plain = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value._value()
        _check_value(plain, module, ann, f"{where}{key}")


def _check_value(value: Any, module: signatures.Module, ann: Any, path: str) -> None:
    result = signatures.check(value, module, ann)
    if result.ok is False:
        raise ConfigError(f"wrong type for '{path}': expected {signatures.describe(module, ann)}, got {value!r}")
    if result.schema is not None and isinstance(value, Mapping):
        check_dataclass_dict(*result.schema, value, path)


def check_dataclass_dict(module: signatures.Module, cls: Any, values: Mapping[str, Any], path: str) -> None:
    """Validate a plain dict against a dataclass's fields (names and simple types)."""
    fields = signatures.dataclass_fields(module, cls)
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown key '{path}.{key}'{suggest(str(key), list(fields), path + '.')} for {cls.name}")
        _check_value(value, *fields[key], f"{path}.{key}")


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML text (what runs save as ``config.yaml``)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
