"""docs/openai-fields.md stays true: it lists every field of the installed openai's chat, completion and
Responses create params; each field it calls refused is a 400 naming that field, and each of its neutral
values (and ``null``) is accepted as if it were left out."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types import completion_create_params
from openai.types.chat import completion_create_params as chat_create_params
from openai.types.responses import response_create_params

from ncompass_openai.server.protocol._refused_fields import CHAT as CHAT_REFUSED
from ncompass_openai.server.protocol._refused_fields import REASONS, Refused
from ncompass_openai.server.protocol._refused_fields import RESPONSES as RESPONSES_REFUSED

TABLE = (Path(__file__).parents[2] / "docs" / "openai-fields.md").read_text()
_ROW = re.compile(r"^\| `(?P<field>\w+)` \| (?P<status>[^|]+) \|(?P<notes>[^|]*)\|$", re.MULTILINE)


def _section(section: str) -> list[re.Match[str]]:
    start = TABLE.index(f"## {section}")
    end = TABLE.find("\n## ", start + 1)
    return list(_ROW.finditer(TABLE[start : end if end > 0 else None]))


def _rows(section: str) -> dict[str, str]:
    return {m["field"]: m["status"].strip() for m in _section(section)}


CHAT = _rows("Chat completions")
COMPLETIONS = _rows("Completions")
RESPONSES = _rows("Responses")
SECTIONS = {"Chat completions": CHAT_REFUSED, "Responses": RESPONSES_REFUSED}


def _fields(params: Any) -> set[str]:
    return set(typing.get_type_hints(params.CompletionCreateParamsBase)) | {"stream"}


def test_the_table_lists_every_field_of_openais_params() -> None:
    # Every field of the installed openai (openai 3.x adds fields between releases; a row may be one
    # that only a newer or older openai has).
    assert _fields(chat_create_params) <= set(CHAT)
    assert _fields(completion_create_params) <= set(COMPLETIONS)
    responses = set(typing.get_type_hints(response_create_params.ResponseCreateParamsBase)) | {"stream"}
    assert responses <= set(RESPONSES)


REFUSED = (
    [("/v1/chat/completions", f) for f, s in CHAT.items() if s == "refused"]
    + [("/v1/completions", f) for f, s in COMPLETIONS.items() if s == "refused"]
    + [("/v1/responses", f) for f, s in RESPONSES.items() if s == "refused"]
)
BODIES = {
    "/v1/chat/completions": {"model": "synthetic", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "synthetic", "prompt": "hi"},
    "/v1/responses": {"model": "synthetic", "input": "hi", "max_output_tokens": 4},
}
TABLES = {"/v1/chat/completions": CHAT_REFUSED, "/v1/responses": RESPONSES_REFUSED}


def _notes(field: Refused) -> str:
    if not field.neutral:
        return field.reason
    values = ", ".join(f"`{json.dumps(v)}`" for v in field.neutral)
    return f"{field.reason}; accepted at {values} (as left out)"


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_the_tables_reasons_and_neutral_values_are_the_servers(section: str) -> None:
    notes = {m["field"]: m["notes"].strip() for m in _section(section) if m["status"] == "refused"}
    assert notes == {name: _notes(field) for name, field in SECTIONS[section].items()}
    assert all(REASONS[name] == field.reason for name, field in SECTIONS[section].items())


NEUTRAL = [
    (path, name, value)
    for path, table in TABLES.items()
    for name, field in table.items()
    for value in (None, *field.neutral)
]


_NEUTRAL_IDS = [f"{p.split('/')[-1]}-{f}-{json.dumps(v)}" for p, f, v in NEUTRAL]


@pytest.mark.parametrize(("path", "field", "value"), NEUTRAL, ids=_NEUTRAL_IDS)
def test_each_neutral_value_is_accepted_as_left_out(
    server: Any, api_key: str, path: str, field: str, value: Any
) -> None:
    body = {**BODIES[path], field: value}
    answer = httpx.post(f"{server.url}{path}", json=body, headers={"Authorization": f"Bearer {api_key}"})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(("path", "field"), REFUSED, ids=[f"{p.split('/')[-1]}-{f}" for p, f in REFUSED])
def test_each_refused_field_is_a_400_naming_it(server: Any, api_key: str, path: str, field: str) -> None:
    body = {**BODIES[path], field: "x"}
    answer = httpx.post(f"{server.url}{path}", json=body, headers={"Authorization": f"Bearer {api_key}"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == field and REASONS.get(field, "does not support it") in error["message"]
