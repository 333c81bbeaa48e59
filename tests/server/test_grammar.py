"""``closed``: an object schema that lists ``properties`` and says nothing of other keys admits none."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from ncompass_openai.server.backends.local._grammar import closed

ARGS = {"type": "object", "properties": {"input": {"type": "integer"}}, "required": ["input"]}


def test_objects_with_properties_are_closed_wherever_they_nest() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": ARGS,
            "b": {"type": "array", "items": ARGS},
            "c": {"anyOf": [ARGS, {"type": "null"}]},
        },
        "$defs": {"D": ARGS},
    }
    out = closed(schema)
    assert out["additionalProperties"] is False
    for sub in (out["properties"]["a"], out["properties"]["b"]["items"], out["properties"]["c"]["anyOf"][0]):
        assert sub["additionalProperties"] is False
    assert out["$defs"]["D"]["additionalProperties"] is False
    assert "additionalProperties" not in schema and "additionalProperties" not in ARGS  # copies, not edits


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},  # json_object mode: any object
        {**ARGS, "additionalProperties": True},
        {**ARGS, "additionalProperties": {"type": "string"}},
        {**ARGS, "patternProperties": {"^x": {}}},
        {**ARGS, "required": ["input", "unlisted"]},  # closing would make it unsatisfiable
        {"allOf": [ARGS, {"properties": {"more": {"type": "string"}}}]},  # an intersection of closed objects
    ],
)
def test_left_as_they_are(schema: dict[str, Any]) -> None:
    assert closed(schema) == schema


def test_a_property_named_properties_is_a_property() -> None:
    schema = {"type": "object", "properties": {"properties": {"type": "string"}}}
    assert closed(schema) == {**schema, "additionalProperties": False}


def test_every_answer_of_the_closed_schema_validates_against_the_original() -> None:
    out = closed(ARGS)
    for answer in ({"input": 3}, {"input": -1}):
        jsonschema.validate(answer, out)
        jsonschema.validate(answer, ARGS)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"input": 3, "exclusiveMaximum": 1000}, out)
