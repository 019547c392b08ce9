"""Parameters and type hints of a ``_target_``, read from its source code without importing it.

Config mistakes must be reported in seconds, before torch and Lightning are imported (importing a
DataModule or ``pytorch_lightning.Trainer`` costs several seconds, minutes on a loaded machine).
Hydra and OmegaConf check keys only against the composed YAML, not against the ``__init__`` a node
will be passed to, so this module reads that ``__init__`` with :mod:`ast`:

- the module file is found through :func:`importlib.util.find_spec` of the top-level package
  (which does not execute it) and the package folders below it;
- a name is followed through ``from x import y`` re-exports, ``import x as y`` aliases and
  module-level aliases (``_PATH = Union[str, Path]``);
- a class without its own ``__init__`` takes its first base's (left to right, depth first);
- annotations are interpreted as far as they are plain: builtins, ``Optional``/``Union``/``|``,
  ``Literal``, ``list``/``Sequence``/``tuple``/``dict``/``Mapping`` and dataclasses (checked field
  by field); anything else (``Accelerator``, ``timedelta``...) is "cannot tell" and accepted.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUILTIN_TYPES = {"int", "float", "str", "bool", "list", "dict", "tuple", "set", "bytes", "object"}
TYPING = {"typing", "typing_extensions", "collections.abc", "builtins"}


@dataclass(frozen=True)
class Module:
    """A parsed module: its dotted name, file, and top-level bindings."""

    name: str
    path: Path
    is_package: bool
    tree: ast.Module

    @functools.cached_property
    def bindings(self) -> dict[str, tuple[str, Any]]:
        """name -> ("class", ClassDef) | ("func", FunctionDef) | ("ref", dotted name) | ("alias", expr)."""
        out: dict[str, tuple[str, Any]] = {}
        package = self.name if self.is_package else self.name.rpartition(".")[0]
        for node in self.tree.body:
            if isinstance(node, ast.ClassDef):
                out[node.name] = ("class", node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[node.name] = ("func", node)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*parent, base] if base else parent)
                for alias in node.names:
                    out[alias.asname or alias.name] = ("ref", f"{base}.{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    out[alias.asname or alias.name.split(".")[0]] = (
                        "ref",
                        alias.name if alias.asname else alias.name.split(".")[0],
                    )
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                out[node.targets[0].id] = ("alias", node.value)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                out[node.target.id] = ("alias", node.value)
        return out


@functools.cache
def find_module(name: str) -> Module | None:
    """The parsed source of module ``name``, found without executing it (None: no such module)."""
    parts = name.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if len(parts) == 1:
        if not spec.origin or not spec.origin.endswith(".py"):
            return None
        path = Path(spec.origin)
    else:
        folders = [Path(p) for p in (spec.submodule_search_locations or [])]
        path = None
        for i, part in enumerate(parts[1:]):
            last = i == len(parts) - 2
            found = None
            for folder in folders:
                if (folder / part / "__init__.py").is_file():
                    found = folder / part / "__init__.py"
                    folders = [folder / part]
                    break
                if last and (folder / f"{part}.py").is_file():
                    found = folder / f"{part}.py"
                    break
            if found is None:
                return None
            path = found
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    return Module(name, path, path.name == "__init__.py", tree)


def resolve(dotted: str, depth: int = 0) -> tuple[Module, str, Any] | None:
    """``(module, kind, node)`` that ``dotted`` names (kind as in :attr:`Module.bindings`, or
    "module"), following re-exports; None when it cannot be found statically."""
    if depth > 20:
        return None
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = find_module(".".join(parts[:cut]))
        if module is None:
            continue
        rest = parts[cut:]
        if not rest:
            return module, "module", module.tree
        binding = module.bindings.get(rest[0])
        if binding is None:
            return None
        kind, value = binding
        if kind == "ref":
            return resolve(".".join([value, *rest[1:]]), depth + 1)
        if len(rest) > 1:
            if kind == "class":  # a nested class
                inner = next((n for n in value.body if isinstance(n, ast.ClassDef) and n.name == rest[1]), None)
                return (module, "class", inner) if inner is not None and len(rest) == 2 else None
            return None
        return module, kind, value
    return None


def _expr_name(node: ast.expr) -> str | None:
    """``a.b.c`` of a Name/Attribute chain."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _expr_name(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def qualify(module: Module, name: str) -> str:
    """The dotted name a local name of ``module`` refers to."""
    head, _, tail = name.partition(".")
    binding = module.bindings.get(head)
    if binding is not None and binding[0] == "ref":
        return f"{binding[1]}.{tail}" if tail else binding[1]
    if head in BUILTIN_TYPES or head in ("None", "Any"):
        return f"builtins.{name}"
    return f"{module.name}.{name}"


@dataclass
class Signature:
    """Keyword parameters of a target and the module their annotations are written in."""

    params: dict[str, tuple[Module, ast.expr | None]]
    var_kw: bool


def _function_params(module: Module, fn: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> Signature:
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    if method and positional:
        positional = positional[1:]  # self
    params = {a.arg: (module, a.annotation) for a in [*positional, *args.kwonlyargs]}
    return Signature(params, args.kwarg is not None)


def _is_dataclass(cls: ast.ClassDef) -> bool:
    for dec in cls.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        name = _expr_name(target) or ""
        if name.split(".")[-1] == "dataclass":
            return True
    return False


def dataclass_fields(module: Module, cls: ast.ClassDef) -> dict[str, tuple[Module, ast.expr]]:
    """Annotated fields of a dataclass (ClassVar excluded)."""
    fields = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if "ClassVar" in ast.unparse(node.annotation):
                continue
            fields[node.target.id] = (module, node.annotation)
    return fields


def signature(target: str) -> Signature | None:
    """Parameters of the class or function ``target`` names; None when it cannot be read."""
    return _signature(target, 0)


@functools.cache
def _signature(target: str, depth: int) -> Signature | None:
    found = resolve(target)
    if found is None or depth > 10:
        return None
    module, kind, node = found
    if kind == "func":
        return _function_params(module, node, method=False)
    if kind != "class":
        return None
    init = next((n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "__init__"), None)
    if init is not None:
        return _function_params(module, init, method=True)
    if _is_dataclass(node):
        return Signature(dict(dataclass_fields(module, node)), False)
    for base in node.bases:
        name = _expr_name(base)
        if name is None or name in ("object", "Generic") or name.startswith("Generic"):
            continue
        sig = _signature(qualify(module, name), depth + 1)
        if sig is not None:
            return sig
    return Signature({}, False) if not node.bases else None


# --------------------------------------------------------------------------------------------
# annotations
# --------------------------------------------------------------------------------------------


@dataclass
class TypeCheck:
    """Outcome of checking a value against an annotation: ``ok`` is True, False or None (cannot
    tell); ``schema`` is a dataclass the value (a mapping) must follow, checked by the caller."""

    ok: bool | None
    schema: tuple[Module, ast.ClassDef] | None = None


def _typing_name(module: Module, node: ast.expr) -> str | None:
    """``Optional``, ``list``, ``Sequence``... when ``node`` names a typing construct or builtin."""
    name = _expr_name(node)
    if name is None:
        return None
    full = qualify(module, name)
    head, _, last = full.rpartition(".")
    if head in TYPING:
        return last
    return None


def check(value: Any, module: Module, ann: ast.expr | None, depth: int = 0) -> TypeCheck:
    """Does the plain config ``value`` fit annotation ``ann`` (written in ``module``)?"""
    if ann is None or depth > 20:
        return TypeCheck(True)
    if isinstance(ann, ast.Constant):
        if ann.value is None:
            return TypeCheck(value is None)
        if isinstance(ann.value, str):  # a string annotation
            try:
                return check(value, module, ast.parse(ann.value, mode="eval").body, depth + 1)
            except SyntaxError:
                return TypeCheck(None)
        return TypeCheck(None)
    if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):
        return _union(value, module, [ann.left, ann.right], depth)
    if isinstance(ann, ast.Subscript):
        base = _typing_name(module, ann.value)
        args = list(ann.slice.elts) if isinstance(ann.slice, ast.Tuple) else [ann.slice]
        if base == "Optional":
            return _union(value, module, [*args, ast.Constant(None)], depth)
        if base == "Union":
            return _union(value, module, args, depth)
        if base == "Literal":
            try:
                choices = [ast.literal_eval(a) for a in args]
            except ValueError:
                return TypeCheck(None)
            return TypeCheck(value in choices)
        if base in ("list", "List", "Sequence", "MutableSequence", "tuple", "Tuple", "Iterable", "Collection"):
            if not isinstance(value, (list, tuple)):
                return TypeCheck(False if base not in ("Iterable", "Collection") or not isinstance(value, (str, dict)) else None)
            items = [a for a in args if not (isinstance(a, ast.Constant) and a.value is Ellipsis)]
            if len(items) == 1 or base in ("list", "List", "Sequence", "MutableSequence"):
                results = [check(v, module, items[0], depth + 1).ok for v in value] if items else []
                return TypeCheck(not any(r is False for r in results))
            return TypeCheck(True)
        if base in ("dict", "Dict", "Mapping", "MutableMapping"):
            return TypeCheck(isinstance(value, dict))
        if base in ("Annotated",):
            return check(value, module, args[0], depth + 1)
        return TypeCheck(None)
    name = _expr_name(ann)
    if name is None:
        return TypeCheck(None)
    simple = _typing_name(module, ann)
    if simple is not None:
        return TypeCheck(_builtin_ok(value, simple))
    found = resolve(qualify(module, name))
    if found is None:
        return TypeCheck(None)
    where, kind, node = found
    if kind == "alias":
        return check(value, where, node, depth + 1)
    if kind == "class" and _is_dataclass(node):
        if isinstance(value, dict):
            return TypeCheck(True, (where, node))
        return TypeCheck(False)
    return TypeCheck(None)


def _union(value: Any, module: Module, options: list[ast.expr], depth: int) -> TypeCheck:
    results = [check(value, module, a, depth + 1) for a in options]
    for r in results:
        if r.ok is True:
            return r
    return TypeCheck(None if any(r.ok is None for r in results) else False)


def _builtin_ok(value: Any, name: str) -> bool | None:
    if name in ("Any", "object"):
        return True
    if name == "None":
        return value is None
    if value is None:
        return False
    if name == "bool":
        return isinstance(value, bool)
    if name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "str":
        return isinstance(value, str)
    if name in ("list", "List", "Sequence", "tuple", "Tuple", "MutableSequence"):
        return isinstance(value, (list, tuple))
    if name in ("dict", "Dict", "Mapping", "MutableMapping"):
        return isinstance(value, dict)
    return None


def describe(module: Module, ann: ast.expr | None) -> str:
    """The annotation as written (for error messages)."""
    if ann is None:
        return "any"
    if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
        return ann.value
    return ast.unparse(ann)
