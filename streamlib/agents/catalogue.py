"""The actor catalogue as data: one JSON description per actor class, read from the code.

The single source of truth for ``list_actor_types`` (the MCP tool), ``streamlib catalogue
--json`` and ``docs/catalogue.md`` (which ``docs/gen_catalogue.py`` renders from this JSON).
Everything is taken from the classes themselves, so nothing can drift:

* ``parameters``: the constructor's signature as a JSON Schema object (types from the
  annotations, defaults from the signature; a parameter that only Python can give -- a
  callable, a dispatcher instance -- is marked ``"x-json": false``);
* ``ports``: every ``StreamInput(...)`` / ``StreamOutput(...)`` the class (or a base) builds,
  found in its source, with the message type resolved to its public class name (a module
  that imports ``VideoFrame as Frame`` still says ``VideoFrame``);
* ``needs``: the pip packages of the third-party modules its module imports at module level
  (following the package's own relative imports), a guarded ``try: import`` counted as optional;
* ``dispatchers``: the default (``"own thread"`` when the constructor wraps it with
  ``own_thread``, ``"gpu"`` for GPU actors) and the names it may be given.

This module imports no MCP code: the docs generator and the CLI use it without the
``agents`` extra.
"""

from __future__ import annotations

import ast
import builtins
import collections.abc
import enum
import fractions
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import linecache
import os
import pathlib
import re
import sys
import threading
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Any

from streamlib import Actor

__all__ = [
    "CORE_ACTORS",
    "SCHEMA_VERSION",
    "actor_types",
    "catalogue",
    "describe",
    "json_schema",
    "needs_of",
    "ports_of",
]

SCHEMA_VERSION = 1

CORE_ACTORS: tuple[tuple[str, str], ...] = (
    ("streamlib.supervision", "Supervisor"),
    ("streamlib.testing", "Probe"),
    ("streamlib.testing", "Feeder"),
)
"""The actors of the core that the catalogue lists after the ready-made ones."""

CPU_DISPATCHERS = ("asyncio", "thread", "process")
FRAMEWORK_OPTIONS = {
    "name": {"type": "string", "description": "unique among siblings; default: the class name in snake case"},
    "restart": {"enum": ["permanent", "transient", "temporary"], "default": "permanent"},
}

# -- parameter types as JSON Schema -------------------------------------------------------


def json_schema(hint: Any) -> dict[str, Any]:
    """A JSON Schema for values of the Python type ``hint``.

    Types JSON cannot carry (callables, classes such as ``Dispatcher``) come back as
    ``{"x-python-type": "...", "x-json": False}``; in a union they are left out when another
    member can be given (``Callable | str`` is a string)."""
    if hint is Any or hint is inspect.Parameter.empty or hint is object:
        return {}
    if hint is None or hint is type(None):
        return {"type": "null"}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return json_schema(args[0])
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin is typing.Union or origin is types.UnionType:
        members = [json_schema(a) for a in args]
        usable = [m for m in members if m.get("x-json", True)]
        if not usable or (len(usable) < len(members) and all(m == {"type": "null"} for m in usable)):
            return {"x-python-type": _type_text(hint), "x-json": False}
        flat: list[dict[str, Any]] = []
        for member in usable:
            flat.extend(member["anyOf"] if set(member) == {"anyOf"} else [member])
        if any(m == {} for m in flat):
            return {}
        return flat[0] if len(flat) == 1 else {"anyOf": flat}
    if origin in (list, set, frozenset, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Set):
        return {"type": "array", "items": json_schema(args[0]) if args else {}}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": json_schema(args[0])}
        if args:
            items = [json_schema(a) for a in args]
            return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
        return {"type": "array"}
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        return {"type": "object", "additionalProperties": json_schema(args[1]) if len(args) == 2 else {}}
    if origin is not None and origin in (collections.abc.Callable,):
        return {"x-python-type": _type_text(hint), "x-json": False}
    if isinstance(hint, type):
        if issubclass(hint, bool):
            return {"type": "boolean"}
        if issubclass(hint, enum.Enum):
            return {"enum": [m.value for m in hint]}
        if issubclass(hint, int):
            return {"type": "integer"}
        if issubclass(hint, float | fractions.Fraction):
            return {"type": "number"}
        if issubclass(hint, str):
            return {"type": "string"}
        if issubclass(hint, pathlib.PurePath | os.PathLike):
            return {"type": "string", "format": "path"}
        if hint in (list, tuple, set, frozenset):
            return {"type": "array"}
        if hint is dict:
            return {"type": "object"}
    return {"x-python-type": _type_text(hint), "x-json": False}


def _type_text(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__qualname__
    return re.sub(r"\b(?:typing|collections\.abc|numpy\.typing|streamlib\.[\w.]+)\.", "", str(hint))


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The annotations of ``fn``, evaluated where they can be; each one apart, so one
    annotation naming a ``TYPE_CHECKING``-only type costs only that parameter its type."""
    fn = inspect.unwrap(fn)
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        pass
    found: dict[str, Any] = {}
    namespace = {**vars(typing), **getattr(fn, "__globals__", {})}
    for name, annotation in getattr(fn, "__annotations__", {}).items():
        if isinstance(annotation, str):
            try:
                found[name] = eval(annotation, namespace)
            except Exception:
                found[name] = annotation
        else:
            found[name] = annotation
    return found


def _json_default(value: Any) -> tuple[bool, Any]:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, pathlib.PurePath):
        value = str(value)
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False, repr(value)
    return True, value


def parameters_of(cls: type) -> dict[str, Any]:
    """The constructor's parameters as a JSON Schema object (``dispatcher``, ``parent``,
    ``clock`` and ``**kwargs`` left out: they are framework options)."""
    init = cls.__init__  # type: ignore[misc]
    try:
        signature = inspect.signature(init)
    except (TypeError, ValueError):
        return {"type": "object"}
    hints = _hints(init)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in signature.parameters.items():
        if name == "self" or name in ("dispatcher", "parent", "clock", "name", "restart"):
            continue
        if param.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            continue
        hint = hints.get(name, param.annotation)
        schema = {"x-python-type": hint, "x-json": False} if isinstance(hint, str) and hint else json_schema(hint)
        if param.kind is inspect.Parameter.KEYWORD_ONLY:
            schema["x-keyword-only"] = True
        if param.default is inspect.Parameter.empty:
            required.append(name)
        else:
            ok, default = _json_default(param.default)
            schema["default" if ok else "x-python-default"] = default
        properties[name] = schema
    found: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        found["required"] = required
    found["additionalProperties"] = False
    return found


def signature_text(cls: type) -> str:
    """``Name(param: type = default, ...)`` as the docs show it."""
    try:
        sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    except (TypeError, ValueError):
        return f"{cls.__name__}(...)"
    params = [p for name, p in sig.parameters.items() if name != "self"]
    text = str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))
    text = re.sub(r": '([^']*)'", r": \1", text)  # string annotations (from __future__ import annotations)
    return f"{cls.__name__}{text}"


# -- ports, read from the source ---------------------------------------------------------


# CPython 3.11's ast module checks its recursion-depth bookkeeping after building the tree and
# raises "SystemError: AST constructor recursion depth mismatch" when another thread moved it
# meanwhile (parsing too, or changing the recursion limit). Parses are serialised, and retried.
parse_lock = threading.Lock()


def parse_source(source: str, filename: str) -> ast.Module:
    """``ast.parse`` under :data:`parse_lock`, retried on CPython 3.11's spurious SystemError."""
    for attempt in range(5):
        try:
            with parse_lock:
                return ast.parse(source, filename)
        except SystemError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


@cache
def _module_tree(filename: str) -> ast.Module | None:
    """A source file parsed once (``linecache`` also holds the sources an agent defined)."""
    lines = linecache.getlines(filename)
    if not lines:
        return None
    try:
        return parse_source("".join(lines), filename)
    except SyntaxError:
        return None


def _class_node(klass: type) -> ast.ClassDef | None:
    """The ``class`` statement of ``klass`` in its module's source (found by qualified name)."""
    try:
        filename = inspect.getfile(klass)
    except TypeError:
        return None
    tree = _module_tree(filename)
    node: ast.ClassDef | None = None
    body: list[ast.stmt] = tree.body if tree is not None else []
    for part in klass.__qualname__.split("."):
        node = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == part), None)
        if node is None:
            return None
        body = node.body
    return node


def _resolve(expression: str, namespace: Mapping[str, Any]) -> Any:
    """The object a dotted name refers to in ``namespace`` (None if it does not)."""
    parts = expression.split(".")
    value = namespace.get(parts[0], getattr(builtins, parts[0], None))
    for part in parts[1:]:
        value = getattr(value, part, None)
    return value


def _namespace_of(klass: type) -> Mapping[str, Any]:
    init = vars(klass).get("__init__")
    if init is not None and hasattr(init, "__globals__"):
        return inspect.unwrap(init).__globals__  # type: ignore[no-any-return]
    module = sys.modules.get(klass.__module__)
    return vars(module) if module is not None else {}


@cache
def _own_ports(klass: type) -> tuple[tuple[tuple[str, str], dict[str, Any]], ...]:
    """The ports one class's own methods build (see :func:`ports_of`)."""
    node = _class_node(klass)
    if node is None:
        return ()
    namespace = _namespace_of(klass)
    found: list[tuple[tuple[str, str], dict[str, Any]]] = []
    for method in ast.walk(node):
        if not isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for call in ast.walk(method):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
                continue
            if call.func.id not in ("StreamInput", "StreamOutput") or not call.args:
                continue
            direction = "input" if call.func.id == "StreamInput" else "output"
            first = call.args[0]
            entry: dict[str, Any] = {}
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                entry["name"] = first.value
            else:
                entry["name"] = ast.unparse(first)
                entry["dynamic"] = True
                entry["defined_in"] = method.name
            type_node: ast.expr | None = call.args[1] if len(call.args) > 1 else None
            for keyword in call.keywords:
                if keyword.arg == "msg_type":
                    type_node = keyword.value
                elif keyword.arg == "memory" and isinstance(keyword.value, ast.Constant):
                    entry["memory"] = keyword.value.value
            entry["type"] = _message_type_name(type_node, namespace)
            entry["direction"] = direction
            found.append(((direction, entry["name"]), entry))
    return tuple(found)


def ports_of(cls: type) -> list[dict[str, Any]]:
    """Every port ``cls`` (or a base class below :class:`Actor`) builds in its methods:
    ``{"name", "direction", "type", "memory"?, "dynamic"?}``, inputs first.

    A port named by an expression (one per constructor argument, say) is listed once with
    ``"dynamic": true`` and the expression as its name."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for klass in reversed(cls.__mro__):
        if klass is Actor or not (isinstance(klass, type) and issubclass(klass, Actor)):
            continue
        for key, entry in _own_ports(klass):
            found[key] = entry
    ordered = sorted(found.values(), key=lambda e: e["direction"] != "input")
    keys = ("name", "direction", "type", "memory", "dynamic", "defined_in")
    return [{k: e[k] for k in keys if k in e} for e in ordered]


def _message_type_name(node: ast.expr | None, namespace: Mapping[str, Any]) -> str:
    if node is None:
        return "object"
    text = ast.unparse(node)
    value = _resolve(text, namespace) if re.fullmatch(r"[\w.]+", text) else None
    if isinstance(value, type):
        return value.__name__  # the public name, whatever the module called it
    return text


# -- what a class needs: read from its module's imports ---------------------------------------


def _pip_names() -> dict[str, str]:
    """Import name -> pip package: the ready actors' own table first, then the installed
    distributions' metadata."""
    names: dict[str, str] = {}
    try:
        for dist_name, module in __import__("streamlib.actors", fromlist=["_MODULES"])._MODULES.items():
            names[module] = dist_name
    except Exception:  # pragma: no cover - streamlib.actors always has it
        pass
    return names


@cache
def _distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _is_core(module: str) -> bool:
    """The core (what ``import streamlib`` loads) depends on numpy and uvloop only: its
    imports are not an actor's needs."""
    if module == "streamlib":
        return True
    parts = module.split(".")
    if parts[0] != "streamlib":
        return False
    spec = importlib.util.find_spec(".".join(parts[:2]))
    if spec is None or spec.origin is None:
        return False
    return parts[1] == "dispatch" or (not spec.submodule_search_locations and parts[1] not in ("service", "cli"))


@cache
def needs_of(module: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(required, optional)`` pip packages of ``module``: the third-party modules it
    imports at module level, following its package's relative imports and the streamlib
    layers it uses. An import inside ``try`` whose handler catches ``ImportError`` is optional;
    imports inside functions (loaded on demand) and under ``TYPE_CHECKING`` are not counted."""
    required: set[str] = set()
    optional: set[str] = set()
    seen: set[str] = set()
    pending = [module]
    pip = _pip_names()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        package = name if spec.submodule_search_locations else name.rpartition(".")[0]
        tree = _module_tree(spec.origin)
        if tree is None:
            continue
        for imported, guarded in _module_level_imports(tree, package):
            top = imported.split(".")[0]
            if top == "streamlib":
                if not _is_core(imported):
                    pending.append(_existing_module(imported))
                continue
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            dist = pip.get(top) or next(iter(_distributions().get(top, [])), top)
            (optional if guarded else required).add(dist)
    optional -= required
    return tuple(sorted(required)), tuple(sorted(optional))


def _existing_module(name: str) -> str:
    """``pkg.mod.attr`` -> the longest prefix that is a module."""
    parts = name.split(".")
    while len(parts) > 1:
        candidate = ".".join(parts)
        try:
            if importlib.util.find_spec(candidate) is not None:
                return candidate
        except (ImportError, ValueError):
            pass
        parts.pop()
    return parts[0]


def _module_level_imports(tree: ast.Module, package: str) -> Iterable[tuple[str, bool]]:
    def visit(body: list[ast.stmt], guarded: bool) -> Iterable[tuple[str, bool]]:
        for node in body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, guarded
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    module = ".".join([*base, node.module] if node.module else base)
                    for alias in node.names:  # `from . import draw` imports a module
                        yield f"{module}.{alias.name}", guarded
                else:
                    module = node.module or ""
                yield module, guarded
            elif isinstance(node, ast.Try):
                # Optional only if a handler catches the ImportError and carries on without
                # the module (one that raises again just words the error better).
                catches = any(
                    (h.type is None or "ImportError" in ast.unparse(h.type) or "Exception" in ast.unparse(h.type))
                    and not any(isinstance(stmt, ast.Raise) for stmt in h.body)
                    for h in node.handlers
                )
                yield from visit(node.body, guarded or catches)
                yield from visit(node.orelse, guarded)
                yield from visit(node.finalbody, guarded)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                yield from visit(node.body, guarded)
                yield from visit(node.orelse, guarded)

    yield from visit(tree.body, False)


# -- one class, the whole catalogue ------------------------------------------------------------


def _own_doc(cls: type) -> str:
    doc = cls.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def summary(doc: str) -> str:
    """The docstring's first sentence, on one line."""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0]


def _sets_own_rate(cls: type) -> bool:
    """Whether the class (or a base of its family) sets ``self.own_fps`` from its arguments."""
    for klass in cls.__mro__:
        if klass.__module__.startswith("streamlib.actors"):
            try:
                if "self.own_fps =" in inspect.getsource(klass):
                    return True
            except (OSError, TypeError):
                continue
    return False


def _clock_of(cls: type) -> dict[str, Any]:
    fps = inspect.getattr_static(cls, "default_fps", None)
    if isinstance(fps, property) or _sets_own_rate(cls):
        return {"own_clock": True, "fps": None, "text": "own clock rate set by its arguments"}
    if fps is None:
        return {"own_clock": False, "fps": None, "text": "message-driven only (no own clock)"}
    return {"own_clock": True, "fps": fps, "text": f"own clock at {fps:g} fps when nothing upstream drives it"}


def _dispatchers_of(cls: type) -> dict[str, Any]:
    """What the constructors (the class's and its bases') do with ``dispatcher``: wrap it
    with ``gpu_dispatcher`` (GPU actors), with ``own_thread`` (a private thread), or nothing."""
    called: set[str] = set()
    for klass in cls.__mro__:
        node = _class_node(klass) if klass is not Actor and "__init__" in vars(klass) else None
        for method in node.body if node is not None else []:
            if isinstance(method, ast.FunctionDef) and method.name == "__init__":
                called.update(
                    c.func.id for c in ast.walk(method) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                )
    if "gpu_dispatcher" in called or cls.__module__.startswith("streamlib.actors.gpu"):
        return {"default": "gpu", "allowed": ["gpu"]}
    if called & {"own_thread", "_own_thread"}:
        return {"default": "own thread", "allowed": list(CPU_DISPATCHERS)}
    return {"default": "asyncio", "allowed": list(CPU_DISPATCHERS)}


def describe(
    cls: type,
    *,
    module: str | None = None,
    origin: str = "ready",
    dispatchers: dict[str, Any] | None = None,
    package: str | None = None,
) -> dict[str, Any]:
    """The catalogue entry of one actor class (a JSON-ready dict). ``package``: the pip
    package ``streamlib.actors`` names when the class's import fails (its ``_EXPORTS``
    table), added to what the module's imports say."""
    doc = _own_doc(cls)
    module = module or cls.__module__
    if origin == "defined":
        needs: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    else:
        needs = needs_of(cls.__module__)
        for base in cls.__mro__[1:]:
            if base is not Actor and isinstance(base, type) and issubclass(base, Actor):
                more = needs_of(base.__module__)
                needs = (tuple(sorted({*needs[0], *more[0]})), tuple(sorted({*needs[1], *more[1]})))
        if package:
            needs = (tuple(sorted({*needs[0], package})), needs[1])
        needs = (needs[0], tuple(sorted(set(needs[1]) - set(needs[0]))))
    return {
        "name": cls.__name__,
        "module": module,
        "origin": origin,
        "summary": summary(doc),
        "doc": doc,
        "signature": signature_text(cls),
        "parameters": parameters_of(cls),
        "options": FRAMEWORK_OPTIONS,
        "ports": ports_of(cls),
        "clock": _clock_of(cls),
        "dispatchers": dispatchers or _dispatchers_of(cls),
        "needs": list(needs[0]),
        "optional_needs": list(needs[1]),
        "available": True,
    }


def _ready_classes() -> Iterable[tuple[str, str, type | None, str | None, str]]:
    """``(name, module, class or None, import error, package)`` for every ready actor class."""
    from streamlib import actors

    for name, (module_name, package) in actors._EXPORTS.items():
        module = f"streamlib.actors.{module_name}"
        try:
            value = getattr(actors, name)
        except ImportError as exc:
            if name[0].isupper() and not name.endswith(("Error", "Status", "Warning")):
                yield name, module, None, f"{exc} (needs {package})", package
            continue
        if isinstance(value, type) and issubclass(value, Actor):
            yield name, module, value, None, package


def actor_types(defined: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Every ready actor, the core actors, then ``defined`` (entries the agent tools made)."""
    found: list[dict[str, Any]] = []
    for name, module, cls, error, package in _ready_classes():
        if cls is None:
            entry = {"name": name, "module": module, "origin": "ready", "available": False, "error": error}
            found.append({**entry, "needs": [package]})
        else:
            found.append(describe(cls, module=module, package=package))
    for module, name in CORE_ACTORS:
        found.append(describe(getattr(importlib.import_module(module), name), module=module, origin="core"))
    found.extend(defined)
    return found


def catalogue(defined: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """The whole catalogue: ``{"schema_version", "streamlib", "actors": [...]}``."""
    import streamlib

    return {"schema_version": SCHEMA_VERSION, "streamlib": streamlib.__version__, "actors": actor_types(defined)}
