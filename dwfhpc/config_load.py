"""Reading a config file safely and reporting every problem in it at once (for :mod:`dwfhpc.config`).

YAML is read with ``yaml.safe_load``'s loader bounded in size, nodes, depth and expanded aliases (a
hostile file cannot make it slow or huge); duplicate keys are problems; pydantic's errors and the
sections' own checks become one list of :class:`~dwfhpc.errors.ConfigError`, ordered by line.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError, ConfigProblems


class Strict(BaseModel):
    """Base: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def checks(self) -> list[tuple[str, str]]:
        """Problems found after validation, across fields: ``(key relative to this section, problem)``.

        Run by the loaders (not on assignment); their problems join pydantic's in one list. A
        section's checks run whenever that section validates, whatever is wrong elsewhere.
        """
        return []


def _read_yaml(path: Path) -> dict[str, Any]:
    return _read_yaml_keys(path)[0]


#: a configuration file is a few KB; anything far larger is not one
MAX_CONFIG_BYTES = 1 << 20
#: values in a file once its aliases are expanded (a site config has ~100): bounds an alias bomb
MAX_CONFIG_NODES = 10_000
#: nesting depth of a configuration file (a site config has 3-4 levels)
MAX_CONFIG_DEPTH = 64


def _bound_nodes(root: yaml.Node, path: Path) -> None:
    """Refuse a composed file whose aliases expand past :data:`MAX_CONFIG_NODES` values or past
    :data:`MAX_CONFIG_BYTES` characters of text (one long string repeated through aliases would reach
    every job script), that nests deeper than :data:`MAX_CONFIG_DEPTH` or whose aliases refer to themselves.

    Each distinct node is measured once (its expanded size and height memoised), so a billion-laughs
    file is refused in time proportional to its text, not to its expansion.
    """
    measured: dict[int, tuple[int, int, int]] = {}  # id(node) -> (expanded values, expanded characters, height)
    open_nodes: set[int] = set()

    def measure(node: yaml.Node, depth: int) -> tuple[int, int, int]:
        key = id(node)
        if key in open_nodes:
            raise ConfigError(f"a YAML alias refers to the value it is part of (line {node.start_mark.line + 1}): "
                              "a recursive structure is not a configuration", path)
        if key not in measured:
            if depth > MAX_CONFIG_DEPTH:
                raise ConfigError(f"nested deeper than {MAX_CONFIG_DEPTH} levels (line {node.start_mark.line + 1})",
                                  path)
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            else:
                children = []
            open_nodes.add(key)
            size, chars, height = 1, len(node.value) if isinstance(node, yaml.ScalarNode) else 0, 0
            for child in children:
                child_size, child_chars, child_height = measure(child, depth + 1)
                size, chars, height = size + child_size, chars + child_chars, max(height, child_height + 1)
                if size > MAX_CONFIG_NODES or chars > MAX_CONFIG_BYTES:
                    what = (f"{MAX_CONFIG_NODES} values" if size > MAX_CONFIG_NODES
                            else f"{MAX_CONFIG_BYTES} characters")
                    raise ConfigError(f"more than {what} once its YAML aliases are expanded "
                                      f"(from line {node.start_mark.line + 1}; an alias bomb?): not a configuration",
                                      path)
            open_nodes.discard(key)
            measured[key] = (size, chars, height)
        size, chars, height = measured[key]
        if depth + height > MAX_CONFIG_DEPTH:
            raise ConfigError(f"nested deeper than {MAX_CONFIG_DEPTH} levels (line {node.start_mark.line + 1})", path)
        return size, chars, height

    measure(root, 0)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that stops composing past :data:`MAX_CONFIG_DEPTH` levels (before its
    recursive composer and its per-level scanner bookkeeping make deep brackets slow or a RecursionError)."""

    def __init__(self, text: str, path: Path):
        super().__init__(text)
        self.config_path = path
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self.depth += 1
        try:
            if self.depth > MAX_CONFIG_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise ConfigError(f"nested deeper than {MAX_CONFIG_DEPTH} levels (line {line})", self.config_path)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _load_bounded(path: Path) -> tuple[Any, yaml.Node | None]:
    """The file's data and its composed node tree, refused (:class:`ConfigError`) when it is not
    UTF-8 YAML of bounded size, nesting and alias expansion (see :func:`_bound_nodes`)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read ({exc.strerror})", path) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES // 1024} KiB: not a configuration file", path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})", path) from None
    loader = _BoundedLoader(text, path)
    try:
        node = loader.get_single_node()  # composes: aliases stay shared nodes, nothing is expanded yet
        if node is None:
            return None, None
        _bound_nodes(node, path)
        return loader.construct_document(node), node
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", path) from None
    except RecursionError:  # PyYAML composes recursively: a few hundred levels of brackets
        raise ConfigError(f"nested deeper than {MAX_CONFIG_DEPTH} levels", path) from None
    finally:
        loader.dispose()


def _read_yaml_keys(path: Path) -> tuple[dict[str, Any], dict[tuple, int], list[tuple[tuple, str]]]:
    """The file's mapping, the line of every key in it (key path -> 1-based line), and keys given twice."""
    data, root = _load_bounded(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, found {type(data).__name__}", path)
    lines: dict[tuple, int] = {}
    duplicates: list[tuple[tuple, str]] = []

    def walk(node: Any, prefix: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name = str(key.value)
                line = key.start_mark.line + 1
                if name in seen:  # YAML keeps the last one silently; the user meant one of them
                    duplicates.append((prefix + (name,), f"given twice (lines {seen[name]} and {line}); "
                                                         "only the last one counts"))
                else:
                    seen[name] = line
                lines.setdefault(prefix + (name,), line)
                walk(value, prefix + (name,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault(prefix + (i,), item.start_mark.line + 1)
                walk(item, prefix + (i,))

    if root is not None:
        walk(root, ())  # bounded: at most MAX_CONFIG_NODES values, MAX_CONFIG_DEPTH deep (_bound_nodes)
    return data, lines, duplicates


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The settings class that holds the last element of ``loc`` (None below a plain dict or list)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        sub = field.annotation if field else None
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return None
        model = sub
    return model


def _describe(err: dict[str, Any], model: type[BaseModel]) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "extra_forbidden":
        holder = _model_at(model, loc)
        close = difflib.get_close_matches(str(loc[-1]), list(holder.model_fields), n=1) if holder and loc else []
        return "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return "required value is missing"
    msg = str(err["msg"])
    if kind == "value_error" and msg.startswith("Value error, "):
        return msg[len("Value error, "):]
    got = err.get("input")
    if isinstance(got, dict):
        return msg
    text = repr(got)
    return f"{msg} (got {text if len(text) <= 80 else text[:77] + '...'})"


def _pydantic_problems(exc: ValidationError, model: type[BaseModel]) -> list[tuple[tuple, str]]:
    return [(tuple(err["loc"]), _describe(err, model)) for err in exc.errors()]


def _section_checks(model: type[BaseModel], data: Any, prefix: tuple = ()) -> list[tuple[tuple, str]]:
    """Problems the settings classes find after validation (:meth:`Strict.checks`).

    Each section is validated on its own, and with its invalid keys left out (their defaults
    in their place), so its checks run and join the list whatever else is wrong in the file.
    """
    if not isinstance(data, dict):
        return []
    out: list[tuple[tuple, str]] = []
    settings = None
    valid = data
    for _ in range(2):
        try:
            settings = model.model_validate(valid)
            break
        except ValidationError as exc:
            bad = {err["loc"][0] for err in exc.errors() if err["loc"]}
            valid = {k: v for k, v in data.items() if k not in bad}
    if isinstance(settings, Strict):
        out += [(prefix + tuple(key.split(".")), problem) for key, problem in settings.checks()]
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, Strict):
            out += _section_checks(sub, data.get(name, {}), prefix + (name,))
    return out


def _validate(model: type[BaseModel], data: dict[str, Any], path: Path, lines: dict[tuple, int],
              duplicates: list[tuple[tuple, str]]) -> Any:
    """Validated settings, or every problem in the file at once.

    Keys given twice, pydantic's errors (unknown keys, wrong types, bad values, custom field
    validators) and the sections' :meth:`Strict.checks` are gathered into one list, ordered as
    the keys appear in the file. One problem raises a :class:`ConfigError`; several raise a
    :class:`ConfigProblems` holding one ``file: key.path: problem`` error each.
    """
    problems = list(duplicates)
    settings = None
    try:
        settings = model.model_validate(data)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, model)
    reported = {loc for loc, _ in problems}
    # a check about a key already reported (validated with its default in its place) would mislead
    problems += [(loc, p) for loc, p in _section_checks(model, data) if loc not in reported]
    if not problems:
        return settings

    def line_of(loc: tuple) -> int:
        for n in range(len(loc), 0, -1):
            if loc[:n] in lines:
                return lines[loc[:n]]
        return 10**9  # not in the file (a missing key, a default, an override): last

    unique = list(dict.fromkeys(problems))
    ordered = sorted(unique, key=lambda p: line_of(p[0]))  # stable: pydantic's order within a line
    errors = [ConfigError(problem, path, key=".".join(str(x) for x in loc) or "(top level)")
              for loc, problem in ordered]
    if len(errors) == 1:
        raise errors[0]
    raise ConfigProblems(errors, path)
