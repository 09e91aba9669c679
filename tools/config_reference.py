"""The configuration reference, written from the pydantic models in service/config.py.

Every key of the configuration file with its type, default and description: the
description is the field's ``description=``, else the comment on or right above its line in
service/config.py. The documentation site builds it on every build (tools/docs_hooks.py), so
the page cannot drift from the code.

    python tools/config_reference.py        # print the reference as Markdown
"""

from __future__ import annotations

import enum
import inspect
import io
import re
import tokenize
import types
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from service import config as cfg

# Where each model of the file sits, in the order of the page.
SECTIONS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("", cfg.Settings),
    ("accounts[]", cfg.Account),
    ("accounts[].sandbox", cfg.SandboxOptions),
    ("accounts[].x", cfg.XOptions),
    ("accounts[].x.prices", cfg.XPrices),
    ("accounts[].facebook", cfg.FacebookOptions),
    ("rules", cfg.Rules),
    ("schedule", cfg.Schedule),
    ("digest", cfg.Digest),
    ("digest.smtp", cfg.Smtp),
    ("storage", cfg.Storage),
    ("web", cfg.Web),
)


def _comments(model: type[BaseModel]) -> dict[str, str]:
    """Each field's comment: the lines of ``#`` right above it, or the one at its end."""
    source = inspect.getsource(model)
    found: dict[str, str] = {}
    pending: list[str] = []
    lines = source.splitlines()
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if re.match(r"^ {4}#", line):
            pending.append(comments.get(number, ""))
            continue
        field = re.match(r"^ {4}(\w+)\s*:", line)
        if field and field.group(1) in model.model_fields:
            text = " ".join(pending)
            if number in comments and not stripped.startswith("#"):
                text = f"{text} {comments[number]}".strip()
            if text:
                found[field.group(1)] = text
        pending = []
    return found


def _name(annotation: Any) -> str:
    """A type as a person reads it."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        rest = [a for a in args if a is not type(None)]
        inner = " or ".join(_name(a) for a in rest)
        return f"{inner}, or unset" if len(rest) < len(args) else inner
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (frozenset, set, list):
        (item,) = args
        return f"list of {_plural(item)}"
    if origin is tuple:
        return "[" + ", ".join(_name(a) for a in args) + "]"
    if origin is dict:
        key, value = args
        return f"{_name(key)} → {_name(value)}"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "section (below)"
        if issubclass(annotation, enum.Enum):
            return "kind" if annotation.__name__ == "Kind" else annotation.__name__.lower()
    return {
        bool: "true or false",
        int: "integer",
        float: "number",
        str: "text",
        timedelta: "duration",
        Path: "path",
        SecretStr: "secret (`${NAME}`)",
    }.get(annotation, str(annotation))


def _plural(annotation: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _name(annotation) + "s (" + ", ".join(f"`{m.value}`" for m in annotation) + ")"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "entries"
    return {str: "text", SecretStr: "secrets"}.get(annotation, _name(annotation) + "s")


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0 and not (unit == "w" and seconds % 86400 == 0):
            return f"{seconds // size}{unit}"
    return f"{value.total_seconds():g}s"


def _value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, timedelta):
        return _duration(value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, frozenset | set):
        if value and isinstance(next(iter(value)), enum.Enum):
            members = type(next(iter(value)))
            if len(value) == len(members):
                return "all"
        return "[" + ", ".join(sorted(_value(v) for v in value)) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return ", ".join(f"{_value(k)}: {_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, BaseModel):
        return "its defaults"
    return str(value)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        return _value(info.default_factory())  # type: ignore[call-arg]
    if info.default is PydanticUndefined:
        return "required"
    return _value(info.default)


def _limits(info: FieldInfo) -> str:
    parts: list[str] = []
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            parts.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            parts.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.Lt):
            parts.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen):
            parts.append("not empty" if item.min_length == 1 else f"≥ {item.min_length} long")
        elif getattr(item, "pattern", None):
            parts.append(f"matches `{item.pattern}`")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def fields() -> list[tuple[str, str, str, str]]:
    """Every key of the file: (key, type, default, description)."""
    rows: list[tuple[str, str, str, str]] = []
    for prefix, model in SECTIONS:
        comments = _comments(model)
        for name, info in model.model_fields.items():
            key = f"{prefix}.{name}" if prefix else name
            kind = _name(info.annotation)
            limits = _limits(info)
            if limits:
                kind = f"{kind} ({limits})"
            rows.append((key, kind, _default(info), info.description or comments.get(name, "")))
    return rows


def reference() -> str:
    """The reference as Markdown: one table per section of the file."""
    out = [
        "## Every key",
        "",
        "Generated from the models in `service/config.py` when the site is built. Durations "
        "are written `90s`, `30m`, `6h`, `180d` or `2w`; a secret is written `${NAME}` (the "
        "environment variable `NAME`, else the file `$CREDENTIALS_DIRECTORY/NAME`).",
        "",
    ]
    rows = fields()
    for prefix, model in SECTIONS:
        out += [f"### `{prefix}`" if prefix else "### The top level", ""]
        doc = model.__dict__.get("__doc__")
        if doc:
            lead = inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ")
            out += [lead.replace("``", "`"), ""]
        out += ["| key | type | default | description |", "|---|---|---|---|"]
        for key, kind, default, description in rows:
            parent = key.rpartition(".")[0]
            if parent != prefix:
                continue
            out.append(f"| `{key}` | {_cell(kind)} | `{_cell(default)}` | {_cell(description)} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(reference())
