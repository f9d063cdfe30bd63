"""Code digests: a stage reruns when code that can change its outputs changes, and not otherwise.

``digest(entries)`` hashes the syntax trees (docstrings dropped, comments never parsed) of the
definitions that ``entries`` reach. An entry is ``module:name`` (a function, class or constant of
a package module), a bare ``module`` (all of it), or the path of a script file. From each
definition the walk follows every name it uses that is defined at the top level of its module or
imported from an ``inscl`` module, recursively. So editing a docstring or a comment changes no
digest, and editing one function changes the digest of exactly the stages that reach it.

Rules pass the digest as a ``code`` param; Snakemake reruns a job whose params changed. Modules
are parsed without being imported (stdlib only), so the Snakefile starts fast.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

PACKAGE = "inscl"
VERSION = "1"  # bump to invalidate every digest


class _Module:
    """One parsed module: its top-level definitions and where its imported names come from."""

    def __init__(self, name: str, path: Path):
        self.name = name
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        _drop_docstrings(tree)
        self.tree = tree
        self.definitions: dict[str, list[ast.AST]] = {}
        for node in tree.body:
            for defined in _defined_names(node):
                self.definitions.setdefault(defined, []).append(node)
        # alias -> (module, attribute or None for a module), from imports anywhere in the file
        self.imports: dict[str, tuple[str, str | None]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(node, name, path.name == "__init__.py")
                if source and source.split(".")[0] == PACKAGE:
                    for alias in node.names:
                        self.imports[alias.asname or alias.name] = (source, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE and alias.asname:
                        self.imports[alias.asname] = (alias.name, None)


def _drop_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]


def _defined_names(node: ast.AST) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [n.id for target in node.targets for n in ast.walk(target) if isinstance(n, ast.Name)]
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str | None:
    if node.level == 0:
        return node.module
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


@lru_cache(maxsize=None)
def _source(name: str) -> Path | None:
    """The file of a package module, found on disk without importing anything."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    folder = Path(find_spec(PACKAGE).origin).parent.joinpath(*parts[1:])
    for candidate in (folder.with_suffix(".py"), folder / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=None)
def _module(name: str) -> _Module:
    path = _source(name)
    if path is None:
        raise ModuleNotFoundError(f"code digest: no module {name}")
    return _Module(name, path)


@lru_cache(maxsize=None)
def _script(path: str) -> _Module:
    return _Module("__script__", Path(path))


def _is_module(name: str) -> bool:
    return _source(name) is not None


def _used_names(node: ast.AST) -> tuple[set[str], set[tuple[str, str]]]:
    """Bare names a definition uses, and (alias, attribute) pairs such as `distributed.barrier`."""
    names, attributes, bases = set(), set(), set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
            attributes.add((sub.value.id, sub.attr))
            bases.add(id(sub.value))
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and id(sub) not in bases:
            names.add(sub.id)
    return names, attributes


def _closure(module: _Module, names: set[str], seen: set, parts: list[str]) -> None:
    for name in sorted(names):
        key = (module.name, name)
        if key in seen:
            continue
        seen.add(key)
        if name in module.definitions:
            for node in module.definitions[name]:
                parts.append(f"{module.name}:{name}:{ast.dump(node, include_attributes=False)}")
                used, attributes = _used_names(node)
                _closure(module, used - {name}, seen, parts)
                for alias, attribute in sorted(attributes):
                    target = module.imports.get(alias)
                    if target and _is_submodule(target):
                        _closure(_module(_joined(target)), {attribute}, seen, parts)
                    elif alias != name:
                        _closure(module, {alias}, seen, parts)
        elif name in module.imports:
            target = module.imports[name]
            if _is_submodule(target):
                _whole(_module(_joined(target)), seen, parts)
            else:
                _closure(_module(target[0]), {target[1]}, seen, parts)


def _joined(target: tuple[str, str | None]) -> str:
    source, attribute = target
    return source if attribute is None else f"{source}.{attribute}"


def _is_submodule(target: tuple[str, str | None]) -> bool:
    return target[1] is None or _is_module(_joined(target))


def _whole(module: _Module, seen: set, parts: list[str]) -> None:
    _closure(module, set(module.definitions) | set(module.imports), seen, parts)


@lru_cache(maxsize=None)
def digest(*entries: str) -> str:
    """A short hex digest of the code `entries` reach (see the module docstring)."""
    seen: set = set()
    parts: list[str] = []
    for entry in entries:
        if entry.endswith(".py"):
            script = _script(entry)
            parts.append(
                ast.dump(ast.Module(body=[n for n in script.tree.body if not _defined_names(n)], type_ignores=[]))
            )
            _whole(script, seen, parts)
        elif ":" in entry:
            module, name = entry.split(":", 1)
            _closure(_module(module), {name}, seen, parts)
        else:
            _whole(_module(entry), seen, parts)
    return hashlib.sha256("\n".join([VERSION, *sorted(parts)]).encode()).hexdigest()[:16]
