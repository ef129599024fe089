"""Configuration: nested dataclasses loaded from YAML with dotted overrides (``a.b=c``).

Unknown keys are errors (a typo must never be silently ignored), values are checked against the field types,
floats must be finite, and a field may carry a range in its metadata (``ranged(64, ge=1)``, checked per item for
lists/tuples), so a bad value is one line naming the key before anything is built.

    cfg = build(RunConfig, load_yaml("configs/ctss.yaml"), overrides=["train.batch_size=4"])
    to_dict(cfg)  # plain dict, YAML/JSON-safe
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, Union

import yaml

from toonlab.errors import ConfigError

T = TypeVar("T")
_BOUNDS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
           "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
# YAML aliases share one object however often they are used; anything that walks the data (checks, copies, an
# error's repr) expands them. "Billion laughs": 9 levels of 10 aliases are 10^9 values from a 1 KB file.
MAX_YAML_VALUES = 100_000
_SHOW = reprlib.Repr()  # error messages show values cut short, never the whole of a huge one
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlist, _SHOW.maxtuple, _SHOW.maxdict, _SHOW.maxlevel = 60, 60, 5, 5, 5, 2


def _show(value: Any) -> str:
    return _SHOW.repr(value)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that names a key twice (the later one silently won)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges keys, then overrides them
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the constructor reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {_show(key)}",
                                                            key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def safe_load(text: str, source: str = "YAML") -> Any:
    """``yaml.safe_load`` that refuses duplicate keys and data whose aliases expand to more than MAX_YAML_VALUES
    values; ConfigError (one line) naming ``source``."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{source}: not valid YAML ({' '.join(str(e).split())[:300]})") from None
    return _bounded(data, source)


def _bounded(data: Any, source: str) -> Any:
    if _expanded_size(data, {}) > MAX_YAML_VALUES:
        raise ConfigError(f"{source}: its aliases (&anchor / *alias) expand to more than {MAX_YAML_VALUES:,} values; "
                          f"refusing it (a 'billion laughs' document?)")
    return data


def _expanded_size(value: Any, sizes: dict[int, int]) -> int:
    """How many values ``value`` holds with every alias expanded; shared containers are counted once each in
    ``sizes`` (by id), so this costs the document's size, not its expansion."""
    if not isinstance(value, (dict, list)):
        return 1
    if id(value) not in sizes:
        sizes[id(value)] = MAX_YAML_VALUES + 1  # met again while counting it: a recursive alias (&a [*a]), endless
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        sizes[id(value)] = min(1 + sum(_expanded_size(v, sizes) for v in items), MAX_YAML_VALUES + 1)
    return sizes[id(value)]


def check_memory(need_bytes: float, what: str) -> None:
    """ConfigError (one line) when ``need_bytes`` — a lower bound of what a setting allocates — exceeds this
    machine's physical memory: refused before anything is allocated (it grew until the kernel stepped in)."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # not available on this platform: nothing to compare with
        return
    if need_bytes > total:
        raise ConfigError(f"{what}: needs at least {need_bytes / 2**30:,.1f} GiB, more than this machine's "
                          f"{total / 2**30:,.1f} GiB of memory")


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping from ``path``; a missing, unreadable or non-mapping file raises ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not valid YAML ({e.reason})") from None
    data = safe_load(text, str(p))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict:
    """Turn ``["a.b=1", "c=[1,2]"]`` into ``{"a": {"b": 1}, "c": [1, 2]}``; values are parsed as YAML scalars."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {_show(item)} is not of the form key.sub=value")
        try:
            value = _bounded(yaml.load(raw, Loader=_StrictLoader), f"override {key}") if raw.strip() else ""
        except yaml.YAMLError:  # not YAML (a glob such as *.png): the text itself
            value = raw
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):  # YAML 1.1 reads 1e-5 as a string
            value = float(value)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {_show(item)} conflicts with another override of {_show(part)}")
        node[parts[-1]] = value
    return out


def merge(base: Mapping, over: Mapping, _path: str = "") -> dict:
    """Deep-merge two nested mappings; values of ``over`` win, sub-mappings merge recursively. A mapping and a
    value that is neither a mapping nor null at the same key is a ConfigError (``train: 5`` with
    ``train.max_steps=3`` silently dropped the 5)."""
    out = dict(base)
    for k, v in over.items():
        here = out.get(k)
        if isinstance(v, Mapping) and isinstance(here, Mapping):
            out[k] = merge(here, v, _join(_path, str(k)))
        elif isinstance(v, Mapping) != isinstance(here, Mapping) and v is not None and here is not None:
            got = v if not isinstance(v, Mapping) else here
            raise ConfigError(f"{_join(_path, str(k))}: expected a mapping, got {_show(got)}")
        else:
            out[k] = v
    return out


def ranged(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None, **kw) -> Any:
    """A dataclass field whose value (or each number of a list/tuple value) must satisfy the given bounds;
    ``from_dict`` checks them: ``ngf: int = ranged(64, ge=1)``."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return dataclasses.field(default=default, metadata={"range": bounds}, **kw)


def check_range(value: Any, bounds: Mapping[str, float], path: str) -> None:
    """Raise ConfigError unless every number in ``value`` satisfies ``bounds`` ({"ge": 1, "lt": 2**31, …})."""
    items = value if isinstance(value, (list, tuple)) else [value]
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        for key, bound in bounds.items():
            ok, op = _BOUNDS[key]
            if not ok(v, bound):
                raise ConfigError(f"{path}: must be {op} {bound}, got {_show(value)}")


def build(cls: type[T], data: Mapping | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Build dataclass ``cls`` from ``data`` merged with dotted ``overrides``; unknown keys raise ConfigError."""
    merged = merge(data or {}, parse_overrides(list(overrides)))
    return from_dict(cls, merged)


def from_dict(cls: type[T], data: Mapping, _path: str = "") -> T:
    """Strictly convert a nested mapping into dataclass ``cls`` (recursing into dataclass-typed fields)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f" in {_path}" if _path else ""
        raise ConfigError(f"unknown config key{'s' if len(unknown) > 1 else ''}{where}: "
                          f"{', '.join(_join(_path, u) for u in unknown)} (valid: {', '.join(sorted(fields))})")
    kwargs = {}
    for name in data:
        value = _coerce(hints[name], data[name], _join(_path, name))
        check_range(value, fields[name].metadata.get("range", {}), _join(_path, name))
        kwargs[name] = value
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclass (possibly nested) → plain dict of YAML/JSON-safe values (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Check/convert ``value`` to type ``tp`` (int, float, bool, str, Path, Literal, Optional, list, tuple, dict,
    nested dataclass); raises ConfigError naming the dotted ``path``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {_show(value)} matches none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {_show(value)} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {_show(value)}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        conv = [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(conv) if origin is tuple else conv
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {_show(value)}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(kt, k, path): _coerce(vt, v, _join(path, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {_show(value)}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{path}: expected a number, got {_show(value)}")
        if not math.isfinite(number):  # a NaN weight or rate would silently poison training
            raise ConfigError(f"{path}: must be a finite number, got {_show(value)}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {_show(value)}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{path}: expected a path, got {_show(value)}")
    return value
