"""Tool and answer schemas between JSON Schema (OpenAI, Anthropic) and the OpenAPI subset Gemini's
`parameters` and `responseSchema` take: what Gemini refuses is dropped or rewritten, never sent."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

# JSON Schema words Gemini's Schema takes as they are; `type`, `format`, `enum`, `nullable`, `anyOf`,
# `properties`, `required` and `items` are rebuilt; everything else ($schema, additionalProperties,
# default, examples, exclusiveMinimum, ...) is dropped.
_GEMINI_KEEP = frozenset({"description", "title", "minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties", "pattern", "minimum", "maximum"})
_FORMATS = {"STRING": ("enum", "date-time"), "NUMBER": ("float", "double"), "INTEGER": ("int32", "int64")}
# A Gemini Schema as google-genai sends it (snake_case) -> JSON Schema words.
_JSON_WORDS = {"any_of": "anyOf", "max_items": "maxItems", "min_items": "minItems", "max_length": "maxLength", "min_length": "minLength"}
_JSON_WORDS |= {"max_properties": "maxProperties", "min_properties": "minProperties", "additional_properties": "additionalProperties", "defs": "$defs", "ref": "$ref"}
_JSON_DROP = frozenset({"nullable", "propertyOrdering", "property_ordering", "example"})


def _schema_defs(schema: Json) -> Json:
    defs: Json = {}
    for key in ("definitions", "$defs"):
        if isinstance(schema.get(key), dict):
            defs.update(schema[key])
    return defs


def _gemini_schema(schema: Any, defs: Json, seen: tuple[str, ...] = ()) -> Json:
    """A JSON schema cut to what Gemini accepts: local $refs inlined, type lists and null options made
    `nullable`, const an enum, oneOf an anyOf, allOf merged, untyped arrays given string items."""
    if not isinstance(schema, dict):
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1]) if ref.startswith(("#/$defs/", "#/definitions/")) else None
        # A recursive or outside reference has no inline form: the model sees a bare object.
        out: Json = _gemini_schema(target, defs, (*seen, ref)) if isinstance(target, dict) and ref not in seen else {"type": "OBJECT"}
        if isinstance(schema.get("description"), str):
            out["description"] = schema["description"]
        return out
    out = {key: value for key, value in schema.items() if key in _GEMINI_KEEP}
    nullable = schema.get("nullable") is True
    kind = schema.get("type")
    if isinstance(kind, list):
        nullable = nullable or "null" in kind
        kinds = [k for k in kind if isinstance(k, str) and k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None if kinds else "null"
        if len(kinds) > 1:  # one branch a type, each with the words of its type only
            rest = {k: v for k, v in schema.items() if k not in _GEMINI_KEEP and k not in ("type", "nullable")}
            out["anyOf"] = [_gemini_schema(_narrowed(rest, k), defs, seen) for k in kinds]
            if nullable:
                out["nullable"] = True
            return out
    options = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(options, list):
        kept: list[Json] = []
        for option in options:
            if isinstance(option, dict) and option.get("type") == "null":
                nullable = True
            elif cleaned := _gemini_schema(option, defs, seen):  # an empty branch allows anything anyway
                kept.append(cleaned)
        if len(kept) == 1:  # `X or null`: X itself, nullable
            out = {**kept[0], **out}
        elif kept:
            out["anyOf"] = kept
    values = [schema["const"]] if "const" in schema else schema.get("enum")
    if isinstance(values, list):
        nullable = nullable or None in values
        strings = [v for v in values if v is not None]
        if strings and all(isinstance(v, str) for v in strings):  # Gemini enums are strings only
            out["enum"] = strings
            kind = kind or "string"
    if isinstance(kind, str) and kind:
        out["type"] = kind.upper()
    elif "type" not in out:
        if "properties" in schema:
            out["type"] = "OBJECT"
        elif "items" in schema:
            out["type"] = "ARRAY"
    fmt = schema.get("format")
    if fmt in _FORMATS.get(out.get("type", ""), ()):
        out["format"] = fmt
    properties = schema.get("properties")
    if isinstance(properties, dict) and properties:
        out["properties"] = {name: _gemini_schema(value, defs, seen) for name, value in properties.items()}
        required = schema.get("required")
        required = [name for name in required if name in out["properties"]] if isinstance(required, list) else None
        if required:
            out["required"] = required
    items = schema.get("items")
    if isinstance(items, dict):
        out["items"] = _gemini_schema(items, defs, seen)
    elif out.get("type") == "ARRAY":
        out["items"] = {"type": "STRING"}  # Gemini refuses an array without items
    all_of = schema.get("allOf")
    for part in all_of if isinstance(all_of, list) else ():
        _merge_schema(out, _gemini_schema(part, defs, seen))
    if nullable:
        out["nullable"] = True
    return out


def _narrowed(schema: Json, kind: str) -> Json:
    """A schema of several types as one of them: Gemini refuses `properties` off an object, `items` off
    an array."""
    drop = {"properties", "required", "additionalProperties"} if kind != "object" else set()
    if kind != "array":
        drop.add("items")
    return {"type": kind, **{k: v for k, v in schema.items() if k not in drop}}


def _merge_schema(out: Json, extra: Json) -> None:
    """One allOf member merged into the schema: properties and required joined, other words kept first."""
    for key, value in extra.items():
        if key == "properties":
            out["properties"] = {**out.get("properties", {}), **value}
        elif key == "required":
            have = out.get("required", [])
            out["required"] = have + [name for name in value if name not in have]
        else:
            out.setdefault(key, value)


def json_schema(schema: Any) -> Any:
    """A Gemini Schema (REST camelCase or google-genai snake_case, upper-case types) as JSON Schema."""
    if isinstance(schema, list):
        return [json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: Json = {}
    for word, value in schema.items():
        key = _JSON_WORDS[word] if word in _JSON_WORDS else word
        if key == "type":
            if isinstance(value, str) and value.upper() != "TYPE_UNSPECIFIED":
                out["type"] = value.lower()
        elif key in ("properties", "$defs"):
            if isinstance(value, dict):
                out[key] = {name: json_schema(s) for name, s in value.items()}
        elif key in ("items", "anyOf", "additionalProperties"):
            out[key] = json_schema(value)
        elif key == "format":
            if value != "enum":  # Gemini's marker for string enums, not a JSON Schema format
                out[key] = value
        elif key not in _JSON_DROP:
            out[key] = value
    if schema.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def gemini_schema(schema: Json) -> Json:
    """A JSON Schema as Gemini's Schema takes it; local `$ref`s inlined."""
    return _gemini_schema(schema, _schema_defs(schema))
