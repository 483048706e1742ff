"""MkDocs hook: the lab file's reference, made from its schema at build time.

A page that holds the line ``<!-- lab-file-schema -->`` gets, in its place, one table per
object of the lab file (the top level, ``containers[]``, ``vm``, ``limits``, ``provision``,
``provision.roles[]``): each key with its type, default and description, read from the JSON
schema ``labkit schema`` prints (``schema()`` of labkit's lab-file module). So the reference
is the validator's own, never a copy. Nothing here needs the network; labkit is imported from
this checkout.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = "<!-- lab-file-schema -->"


def _schema() -> dict[str, Any]:
    """The lab file's JSON schema, from wherever the module lives in this checkout."""
    from labkit.lab.spec import schema

    return schema()


def on_config(config, **kwargs):
    # the checkout's labkit first, whatever else the environment has installed
    root = str(Path(config.config_file_path).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return config


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if MARKER not in markdown:
        return markdown
    try:
        schema = _schema()
    except Exception as e:  # the build must fail, not publish a page without its reference
        raise PluginError(f"docs/hooks.py: cannot read the lab file's schema from labkit: {e!r}") from e
    return markdown.replace(MARKER, render(schema))


# ---------------------------------------------------------------------------- rendering


def _ref(node: dict[str, Any]) -> str | None:
    ref = node.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _anchor(path: str) -> str:
    return "lab-file-" + (
        "top-level" if not path else path.replace("[]", "").replace(".", "-").replace("_", "-")
    )


def _cell(text: str) -> str:
    """Text for a table cell: one line, its pipes escaped, but not inside code spans (Python-Markdown's
    tables keep a pipe in backticks as it is, and would show the backslash)."""
    parts = re.split(r"(`[^`]*`)", text.replace("\n", " "))
    return "".join(part if part.startswith("`") else part.replace("|", "\\|") for part in parts)


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`" if text else '`""`'


def _type(node: dict[str, Any], defs: dict[str, Any], path: str, subsections: list) -> str:
    """A key's type in words: ``string matching `^...$```, ``list of [containers[]](#...)``, ..."""
    name = _ref(node)
    if name:
        subsections.append((path, defs[name]))
        return f"[`{path}`](#{_anchor(path)})"
    if "anyOf" in node:
        kinds = [k for k in node["anyOf"] if k.get("type") != "null"]
        text = " or ".join(_type(k, defs, path, subsections) for k in kinds)
        return text + (" or null" if len(kinds) < len(node["anyOf"]) else "")
    if "enum" in node:
        return "one of " + ", ".join(_code(v) for v in node["enum"])
    if "const" in node:
        return _code(node["const"])
    kind = node.get("type")
    if kind == "array":
        items = node.get("items", {})
        inner = _type(items, defs, path + "[]", subsections)
        text = f"list of {inner}"
        if "minItems" in node:
            text += f", at least {node['minItems']}"
        if "maxItems" in node:
            text += f", at most {node['maxItems']}"
        return text
    if kind == "object":
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return "mapping of " + _type(extra, defs, path + ".*", subsections)
        return "mapping"
    text = kind or "any value"
    if "pattern" in node:
        text += f" matching `{node['pattern']}`"
    bounds = []
    for key, word in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
        ("minLength", "length >="),
        ("maxLength", "length <="),
    ):
        if key in node:
            bounds.append(f"{word} {node[key]}")
    if bounds:
        text += " (" + ", ".join(bounds) + ")"
    return text


def _table(path: str, obj: dict[str, Any], defs: dict[str, Any], subsections: list) -> list[str]:
    title = f"`{path}`" if path else "Top level"
    lines = [f"### {title} {{#{_anchor(path)}}}", ""]
    if obj.get("description"):
        lines += [obj["description"], ""]
    lines += ["| key | type | default | description |", "|---|---|---|---|"]
    required = set(obj.get("required", []))
    for key, node in obj.get("properties", {}).items():
        full = f"{path}.{key}" if path else key
        kind = _type(node, defs, full, subsections)
        if key in required:
            default = "**required**"
        elif "default" in node:
            default = _code(node["default"])
        else:
            default = "optional"
        description = node.get("description") or defs.get(
            _ref(node) or _ref(node.get("items", {})) or "", {}
        ).get("description", "")
        lines.append(f"| `{full}` | {_cell(kind)} | {_cell(default)} | {_cell(description)} |")
    return [*lines, ""]


def render(schema: dict[str, Any]) -> str:
    """Markdown tables of every object of the lab file, the top level first."""
    defs = schema.get("$defs", {})
    out: list[str] = []
    todo: list = [("", schema)]
    seen: set[str] = set()
    while todo:
        path, obj = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        found: list = []
        out += _table(path, obj, defs, found)
        todo += found
    return "\n".join(out)
