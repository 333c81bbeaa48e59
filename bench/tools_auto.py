"""How ``tool_choice: "auto"`` splits on the real model: 20 prompts that call for a tool, 20 that do not.

Runs SmolLM2-135M (llama engine) in a ``LocalServer`` with the tests' two tools (``tests/data/
tool_prompts.json``) and sends all 40 prompts concurrently (8 at a time, the per-key queue). Reports, for
each kind, how many answers called a tool and how many were plain text, and checks that every answer is
valid: a call whose arguments validate against its tool's ``parameters``, or plain text (ended by the model,
or by the token limit as any answer may be). A 135M model is not a good judge of when to call; the point is
that every answer is well formed.

    .venv/bin/python bench/tools_auto.py [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import openai

from ncompass_openai.server import LocalServer

KEY = "nc-bench-key-0123456789"
DATA = json.loads((Path(__file__).resolve().parents[1] / "tests" / "data" / "tool_prompts.json").read_text())
PARAMETERS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in DATA["tools"]}


def _valid(choice: Any) -> bool:
    if choice.message.tool_calls:
        try:
            for call in choice.message.tool_calls:
                jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[call.function.name])
        except (KeyError, ValueError, jsonschema.ValidationError):
            return False
        return choice.finish_reason == "tool_calls"
    return choice.finish_reason in ("stop", "length") and bool(choice.message.content)


async def _run(base_url: str, seed: int) -> list[Any]:
    async with openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=300) as client:
        model = (await client.models.list()).data[0].id
        gate = asyncio.Semaphore(8)

        async def one(prompt: str) -> Any:
            async with gate:
                answer = await client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": prompt}],
                    tools=DATA["tools"],
                    max_tokens=200,
                    seed=seed,
                )
            return answer.choices[0]

        return list(await asyncio.gather(*(one(p) for p in DATA["call"] + DATA["text"])))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with LocalServer(engine="llama", api_keys=[KEY], db=":memory:") as server:
        started = time.perf_counter()
        choices = asyncio.run(_run(server.base_url, args.seed))
        took = time.perf_counter() - started
    print(f"tool_choice auto, seed {args.seed}, {len(choices)} prompts in {took:.0f} s (8 at a time)")
    for kind, part in (("call for a tool", choices[:20]), ("call for none", choices[20:])):
        called = sum(bool(c.message.tool_calls) for c in part)
        valid = sum(_valid(c) for c in part)
        print(
            f"  {len(part)} prompts that {kind}: {called} called a tool, {len(part) - called} answered "
            f"in text; {valid}/{len(part)} well formed"
        )
    return 0 if all(_valid(c) for c in choices) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
