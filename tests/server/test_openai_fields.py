"""docs/openai-fields.md stays true: it lists every field of the installed openai's chat and completion
create params, and each field it calls refused is a 400 naming that field."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types import completion_create_params
from openai.types.chat import completion_create_params as chat_create_params

from ncompass_openai.server.protocol._refused_fields import REASONS

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


def _fields(params: Any) -> set[str]:
    return set(typing.get_type_hints(params.CompletionCreateParamsBase)) | {"stream"}


def test_the_table_lists_every_field_of_openais_params() -> None:
    assert set(CHAT) == _fields(chat_create_params)
    assert set(COMPLETIONS) == _fields(completion_create_params)


REFUSED = [("/v1/chat/completions", f) for f, s in CHAT.items() if s == "refused"] + [
    ("/v1/completions", f) for f, s in COMPLETIONS.items() if s == "refused"
]
BODIES = {
    "/v1/chat/completions": {"model": "synthetic", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "synthetic", "prompt": "hi"},
}


def test_the_tables_reasons_are_the_servers() -> None:
    notes = {m["field"]: m["notes"].strip() for m in _section("Chat completions") if m["status"] == "refused"}
    assert notes == REASONS


@pytest.mark.parametrize(("path", "field"), REFUSED, ids=[f"{p.split('/')[-1]}-{f}" for p, f in REFUSED])
def test_each_refused_field_is_a_400_naming_it(server: Any, api_key: str, path: str, field: str) -> None:
    body = {**BODIES[path], field: "x"}
    answer = httpx.post(f"{server.url}{path}", json=body, headers={"Authorization": f"Bearer {api_key}"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == field and REASONS.get(field, "does not support it") in error["message"]
