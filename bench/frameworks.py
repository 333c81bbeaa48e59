"""Agent frameworks on the real model: how many runs of each flow succeed, out of N.

Starts SmolLM2-135M (llama engine) in a ``LocalServer`` and drives it, unchanged, with the frameworks the
tests use: LangChain's ``bind_tools`` with a forced choice (20 questions about 20 cities, 60 tokens, as a
user reported it), instructor (TOOLS, JSON_SCHEMA), the openai-agents SDK (chat-completions and Responses
models, a function tool) and pydantic-ai (a structured output, with and without a tool). Every flow but
LangChain's runs N times: once at temperature 0, then at temperature 1 with seeds 1.. N-1. A run succeeds
when the framework returns its result (a call, an extracted object, the agent's final output); the
error of a failed run is counted by its kind. Then 210 tool answers sampled at temperature 1 (three
choices, streamed and not, budgets from 5 to 60 tokens) are checked for the tool format's own JSON in
their content.

    .venv/bin/python bench/frameworks.py [--runs 5]

The frameworks are the test environment's (``make setup``). To compare with an earlier revision, run
this file with that revision's package first on ``PYTHONPATH`` (a ``git worktree``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import openai
from pydantic import BaseModel

from ncompass_openai.server import LocalServer

KEY = "nc-bench-key-0123456789"
CITIES = [
    "Paris", "Rome", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Lagos", "Quito", "Seoul",
    "Madrid", "Berlin", "Sydney", "Toronto", "Nairobi", "Hanoi", "Dublin", "Vienna", "Lisbon", "Prague",
]  # fmt: skip
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny and 21 C in {city}."


class City(BaseModel):
    name: str
    country: str


class Forecast(BaseModel):
    city: str
    sunny: bool


def _sampling(run: int) -> dict[str, Any]:
    return {"temperature": 0.0} if run == 0 else {"temperature": 1.0, "seed": run}


def langchain_forced(base_url: str, tool_choice: str) -> tuple[int, int]:
    from langchain_core.tools import tool

    from ncompass_openai.langchain import ChatNCompass

    chat = ChatNCompass(api_key=KEY, base_url=base_url, max_tokens=60, temperature=0)
    bound = chat.bind_tools([tool(get_weather)], tool_choice=tool_choice)
    called = sum(1 for city in CITIES if bound.invoke(f"What is the weather in {city}?").tool_calls)
    return called, len(CITIES)


def instructor_flow(client: openai.OpenAI, model: str, mode: str, run: int) -> None:
    import instructor

    extractor = instructor.from_openai(client, mode=getattr(instructor.Mode, mode))
    extractor.chat.completions.create(
        model=model,
        response_model=City,
        messages=[{"role": "user", "content": "Paris is the capital of France. Extract the city."}],
        max_tokens=80,
        max_retries=0,
        **_sampling(run),
    )


async def agents_flow(client: openai.AsyncOpenAI, model: str, api: str, run: int) -> None:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    model_class = OpenAIChatCompletionsModel if api == "chat" else OpenAIResponsesModel
    settings = ModelSettings(max_tokens=60, tool_choice="required", **_sampling(run))
    agent = Agent(
        name="weather",
        instructions="Answer questions about the weather with the get_weather tool.",
        tools=[function_tool(get_weather)],
        model=model_class(model=model, openai_client=client),
        model_settings=settings,
        tool_use_behavior="stop_on_first_tool",
    )
    await Runner.run(agent, "What is the weather in Paris?", max_turns=2)


async def pydantic_ai_flow(client: openai.AsyncOpenAI, model: str, with_tool: bool, run: int) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.usage import UsageLimits

    agent = Agent(
        OpenAIChatModel(model, provider=OpenAIProvider(openai_client=client)),
        output_type=Forecast,
        tools=[get_weather] if with_tool else [],
        instructions="Call get_weather, then give the forecast." if with_tool else "Give the forecast.",
        model_settings={"max_tokens": 80, **_sampling(run)},
    )
    question = "What is the weather in Paris?" if with_tool else "It is sunny in Paris. What is the forecast?"
    await agent.run(question, usage_limits=UsageLimits(request_limit=4))


def format_leaks(client: openai.OpenAI, model: str) -> tuple[int, int]:
    """Tool answers whose content is the tool format's JSON, of 210 sampled at temperature 1."""
    leaks = total = 0
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("required", named, "auto"):
        for stream in (False, True):
            for budget in (5, 12, 20, 30, 60):
                fields: dict[str, Any] = {
                    "model": model,
                    "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                    "tools": [WEATHER_TOOL],
                    "tool_choice": choice,
                    "max_tokens": budget,
                    "n": 7,
                    "temperature": 1.0,
                    "seed": budget,
                }
                texts: dict[int, str] = collections.defaultdict(str)
                if stream:
                    for chunk in client.chat.completions.create(stream=True, **fields):
                        for c in chunk.choices:
                            texts[c.index] += c.delta.content or ""
                else:
                    for c in client.chat.completions.create(**fields).choices:
                        texts[c.index] = c.message.content or ""
                total += len(texts)
                leaks += sum(1 for text in texts.values() if _is_format(text))
    return leaks, total


_HEADS = ('{"tool_calls":', '{"response":')


def _is_format(text: str) -> bool:
    """Whether ``text`` is the tool format's JSON, or a cut piece of its head (a plain answer's own text
    may start with a brace)."""
    text = text.lstrip()
    return len(text) > 1 and any(text.startswith(head) or head.startswith(text) for head in _HEADS)


def _count(outcomes: list[BaseException | None]) -> str:
    passed = sum(1 for o in outcomes if o is None)
    kinds = collections.Counter(type(o).__name__ for o in outcomes if o is not None)
    failed = ", ".join(f"{kind} x{n}" for kind, n in kinds.most_common())
    return f"{passed}/{len(outcomes)}" + (f"  (failed: {failed})" if failed else "")


def _sync_runs(runs: int, flow: Callable[[int], None]) -> str:
    outcomes: list[BaseException | None] = []
    for run in range(runs):
        try:
            flow(run)
            outcomes.append(None)
        except Exception as exc:
            outcomes.append(exc)
    return _count(outcomes)


async def _async_runs(runs: int, flow: Callable[[int], Awaitable[None]]) -> str:
    outcomes: list[BaseException | None] = []
    for run in range(runs):
        try:
            await flow(run)
            outcomes.append(None)
        except Exception as exc:
            outcomes.append(exc)
    return _count(outcomes)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="runs of each flow (default 5)")
    args = parser.parse_args()
    started = time.perf_counter()
    server = LocalServer(engine="llama", api_keys=[KEY], db=":memory:").start()
    base_url = str(server.base_url)
    rows: list[tuple[str, str]] = []
    try:
        with openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=300) as client:
            model = client.models.list().data[0].id
            for choice in ("any", "get_weather"):
                try:
                    called, asked = langchain_forced(base_url, choice)
                    rows.append(
                        (
                            f"LangChain bind_tools(tool_choice={choice!r}), answers with a call",
                            f"{called}/{asked}",
                        )
                    )
                except Exception as exc:
                    rows.append(
                        (
                            f"LangChain bind_tools(tool_choice={choice!r}), answers with a call",
                            f"failed: {type(exc).__name__}",
                        )
                    )
            for mode in ("TOOLS", "JSON_SCHEMA"):
                rows.append(
                    (
                        f"instructor {mode}",
                        _sync_runs(args.runs, functools.partial(instructor_flow, client, model, mode)),
                    )
                )
            leaks, total = format_leaks(client, model)
            rows.append(("tool answers whose content is the tool format's JSON", f"{leaks}/{total}"))

        async def agent_rows() -> None:
            client = openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=300)
            for api in ("chat", "responses"):
                rows.append(
                    (
                        f"openai-agents, {api} model, function tool",
                        await _async_runs(args.runs, functools.partial(agents_flow, client, model, api)),
                    )
                )
            for with_tool in (False, True):
                rows.append(
                    (
                        f"pydantic-ai output_type{' + tool' if with_tool else ''}",
                        await _async_runs(
                            args.runs, functools.partial(pydantic_ai_flow, client, model, with_tool)
                        ),
                    )
                )
            await client.close()

        asyncio.run(agent_rows())
    finally:
        server.stop()
    width = max(len(name) for name, _ in rows)
    print(f"Agent frameworks on SmolLM2-135M (llama engine), {args.runs} runs a flow")
    for name, result in rows:
        print(f"  {name:<{width}}  {result}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
