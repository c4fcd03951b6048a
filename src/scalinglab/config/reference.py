"""The README's table of config keys, rendered from the JSON schema.

The schema is itself rendered from the config dataclasses (`scalinglab.config.schema`), where
every key's type, default, bounds and description are written once; the README shows this table
of it (`python -m scalinglab.config.schema --write` rewrites both, a test checks that doing so
changes nothing), so the documentation cannot go stale.
"""

from __future__ import annotations

import json

START = "<!-- config-reference:start (python -m scalinglab.config.schema --write) -->"
END = "<!-- config-reference:end -->"


def _type_of(spec: dict) -> str:
    kind = spec.get("type", "")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if "enum" in spec:
        kind = " \\| ".join(f"`{value}`" for value in spec["enum"])
    return kind


def _default_of(spec: dict) -> str:
    if "default" not in spec:
        return ""
    default = spec["default"]
    if default is None:
        return "`null`"
    if isinstance(default, float) and (abs(default) >= 1e5 or 0 < abs(default) < 1e-3):
        return f"`{default:.3g}`"
    return f"`{json.dumps(default)}`"


def _rows(properties: dict, prefix: str = ""):
    for key, spec in properties.items():
        name = prefix + key
        if spec.get("type") == "object" and "properties" in spec:
            yield f"| **`{name}`** | section | | {_cell(spec.get('description', ''))} |"
            yield from _rows(spec["properties"], name + ".")
        else:
            yield (f"| `{name}` | {_type_of(spec)} | {_default_of(spec)} | "
                   f"{_cell(spec.get('description', ''))} |")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(schema: dict) -> str:
    """Every key of the schema, nested keys dotted, in schema order, between the README markers."""
    lines = [START, "", "| key | type | default | what |", "|---|---|---|---|"]
    lines += list(_rows(schema["properties"]))
    lines += ["", END]
    return "\n".join(lines)
