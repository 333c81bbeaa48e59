"""openai's helpers (``chat.completions.parse`` / ``.stream``, ``responses.create`` / ``.parse`` /
``.stream``) without ``model``, sync and async, on both openai majors: the client fills in the key's model.

Against the synthetic engine (plain text answers): the real model's structured outputs are
tests/server/test_structured_outputs.py's and test_responses.py's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ncompass_openai import AsyncNCompass, NCompass

ASK = [{"role": "user", "content": "Say hi."}]
# parse() raises on a `length` finish, and the synthetic engine only stops at a stop string: one of
# these comes within a few words (its 21 words hold both).
ENDS: dict[str, Any] = {"stop": [".", ","], "max_tokens": 100, "temperature": 0}


def test_sync_helpers_take_the_keys_model(api_key: str, base_url: str) -> None:
    with NCompass(api_key=api_key, base_url=base_url, max_retries=0) as client:
        parsed = client.chat.completions.parse(messages=ASK, **ENDS)  # type: ignore[arg-type]
        assert parsed.model == "synthetic" and parsed.choices[0].message.content
        with client.chat.completions.stream(messages=ASK, **ENDS) as stream:  # type: ignore[arg-type]
            final = stream.get_final_completion()
        assert final.choices[0].message.content
        created = client.responses.create(input="Say hi.", max_output_tokens=3)
        assert created.model == "synthetic" and created.output_text
        assert client.responses.parse(input="Say hi.", max_output_tokens=3).output_text
        with client.responses.stream(input="Say hi.", max_output_tokens=3) as events:
            kinds = [event.type for event in events]
        assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")


def test_async_helpers_take_the_keys_model(api_key: str, base_url: str) -> None:
    async def run() -> list[Any]:
        async with AsyncNCompass(api_key=api_key, base_url=base_url, max_retries=0) as client:
            parsed = await client.chat.completions.parse(messages=ASK, **ENDS)  # type: ignore[arg-type]
            async with client.chat.completions.stream(messages=ASK, **ENDS) as stream:  # type: ignore[arg-type]
                final = await stream.get_final_completion()
            created = await client.responses.create(input="Say hi.", max_output_tokens=3)
            reparsed = await client.responses.parse(input="Say hi.", max_output_tokens=3)
            async with client.responses.stream(input="Say hi.", max_output_tokens=3) as events:
                kinds = [event.type async for event in events]
            return [parsed, final, created, reparsed, kinds]

    parsed, final, created, reparsed, kinds = asyncio.run(run())
    assert parsed.model == final.model == created.model == "synthetic"
    assert final.choices[0].message.content and created.output_text and reparsed.output_text
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
