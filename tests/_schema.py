"""A checker for the JSON-schema subset stackful's dump schema uses (no new dependency).

Supported: type (a name or a list; "integer" excludes bool, "number" accepts ints), const,
enum, required, properties, additionalProperties (false only), items, oneOf, minimum, $ref to
"#/$defs/...".  Any other keyword is an error, so the schema cannot silently outgrow the
checker.
"""

from __future__ import annotations

from typing import Any

_KNOWN = {"$schema", "$id", "title", "description", "type", "const", "enum", "required",
          "properties", "additionalProperties", "items", "oneOf", "minimum", "$ref", "$defs"}

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def errors(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None,
           path: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema``, as ``path: problem`` strings (empty: valid)."""
    root = schema if root is None else root
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"{path}: the checker does not support {sorted(unknown)}")
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), ref
        return errors(value, root["$defs"][ref[len("#/$defs/"):]], root, path)
    out: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return [f"{path}: {value!r} is not of type {types}"]
    if "const" in schema and value != schema["const"]:
        out.append(f"{path}: {value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and _TYPES["number"](value) and value < schema["minimum"]:
        out.append(f"{path}: {value!r} < {schema['minimum']}")
    if "oneOf" in schema:
        matches = [errors(value, s, root, path) for s in schema["oneOf"]]
        if sum(not m for m in matches) != 1:
            out.append(f"{path}: matches {sum(not m for m in matches)} of oneOf: "
                       + "; ".join(e for m in matches for e in m))
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                out.append(f"{path}: missing {key!r}")
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                out.extend(errors(item, props[key], root, f"{path}.{key}"))
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}: unexpected {key!r}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out.extend(errors(item, schema["items"], root, f"{path}[{i}]"))
    return out
