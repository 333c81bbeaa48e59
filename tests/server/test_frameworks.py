"""Agent frameworks, unchanged, driving the real model over a socket: the openai-agents SDK (a function
tool, on the chat-completions model and on the Responses model), pydantic-ai (a tool and a structured
``output_type``), instructor (TOOLS and JSON_SCHEMA modes) and LangChain's ``bind_tools`` (``"any"`` and
a named tool, streamed and not).

The frameworks are imported inside the tests: they are installed in the main environment only (the
``frameworks`` extra; openai-agents needs openai 3.x), and every test here runs the real model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.model

ASK = "What is the weather in Paris?"
CITIES = [
    "Paris", "Rome", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Lagos", "Quito", "Seoul",
    "Madrid", "Berlin", "Sydney", "Toronto", "Nairobi", "Hanoi", "Dublin", "Vienna", "Lisbon", "Prague",
]  # fmt: skip
CALLED: list[str] = []


def get_weather(city: str) -> str:
    """The weather in a city."""
    CALLED.append(city)
    return f"Sunny and 21 C in {city}."


@pytest.fixture(autouse=True)
def _calls() -> Iterator[None]:
    CALLED.clear()
    yield


@pytest.fixture
async def aclient(model_server: Any, api_key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    base_url = str(model_server.base_url)
    async with openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture
def sclient(model_server: Any, api_key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=str(model_server.base_url), api_key=api_key, max_retries=0, timeout=120) as c:
        yield c


# -- openai-agents ----------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_an_openai_agents_agent_calls_its_tool(
    aclient: openai.AsyncOpenAI, real_model: str, api: str
) -> None:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)  # no export of traces to OpenAI's servers
    model_class = OpenAIChatCompletionsModel if api == "chat_completions" else OpenAIResponsesModel
    agent = Agent(
        name="weather",
        instructions="Answer questions about the weather with the get_weather tool.",
        tools=[function_tool(get_weather)],
        model=model_class(model=real_model, openai_client=aclient),
        model_settings=ModelSettings(max_tokens=60, temperature=0, tool_choice="required"),
        tool_use_behavior="stop_on_first_tool",  # the tool's result is the agent's answer
    )
    result = await Runner.run(agent, ASK, max_turns=2)
    assert CALLED == ["Paris"]
    assert result.final_output == "Sunny and 21 C in Paris."


# -- pydantic-ai --------------------------------------------------------------------------------------------


class Forecast(BaseModel):
    city: str = Field(description="The city the forecast is for.")
    sunny: bool


def _pydantic_ai_agent(aclient: openai.AsyncOpenAI, real_model: str, tools: list[Any]) -> Any:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return Agent(
        OpenAIChatModel(real_model, provider=OpenAIProvider(openai_client=aclient)),
        output_type=Forecast,
        tools=tools,
        instructions="Give the forecast." if not tools else "Call get_weather, then give the forecast.",
        model_settings={"max_tokens": 80, "temperature": 0},
    )


@pytest.mark.anyio
async def test_a_pydantic_ai_agent_gives_a_structured_output(
    aclient: openai.AsyncOpenAI, real_model: str
) -> None:
    result = await _pydantic_ai_agent(aclient, real_model, []).run(
        "It is sunny in Paris. What is the forecast?"
    )
    assert isinstance(result.output, Forecast) and result.output.city


@pytest.mark.anyio
@pytest.mark.xfail(
    strict=True,
    reason="SmolLM2-135M calls get_weather again after each result instead of pydantic-ai's final_result "
    "tool (0 of 5: temperature 0 and seeds 1-4 at temperature 1, each stopped by the request limit); the "
    "calls are whole and valid, and the same agent without the tool passes",
)
async def test_a_pydantic_ai_agent_with_a_tool_and_a_structured_output(
    aclient: openai.AsyncOpenAI, real_model: str
) -> None:
    from pydantic_ai.usage import UsageLimits

    agent = _pydantic_ai_agent(aclient, real_model, [get_weather])
    result = await agent.run(ASK, usage_limits=UsageLimits(request_limit=4))
    assert "Paris" in CALLED
    assert isinstance(result.output, Forecast) and result.output.city


# -- instructor ----------------------------------------------------------------------------------------------


class City(BaseModel):
    name: str
    country: str


@pytest.mark.parametrize("mode", ["TOOLS", "JSON_SCHEMA"])
def test_instructor_extracts_a_model(sclient: openai.OpenAI, real_model: str, mode: str) -> None:
    import instructor

    client = instructor.from_openai(sclient, mode=getattr(instructor.Mode, mode))
    city = client.chat.completions.create(
        model=real_model,
        response_model=City,
        messages=[{"role": "user", "content": "Paris is the capital of France. Extract the city."}],
        max_tokens=80,
        temperature=0,
        max_retries=0,
    )
    assert isinstance(city, City) and city.name and city.country


# -- LangChain -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("tool_choice", ["any", "get_weather"])
def test_langchain_bind_tools_with_a_forced_choice_always_calls(
    model_server: Any, api_key: str, tool_choice: str, stream: bool
) -> None:
    from langchain_core.tools import tool

    from ncompass_openai.langchain import ChatNCompass

    weather = tool(get_weather)
    # 20 questions at temperature 0 with the 60 tokens the report measured (which made three calls and a
    # cut fourth, then returned the format's JSON as text): each answer is one or more whole calls.
    chat = ChatNCompass(api_key=api_key, base_url=str(model_server.base_url), max_tokens=60, temperature=0)
    bound = chat.bind_tools([weather], tool_choice=tool_choice)
    for city in CITIES:
        question = f"What is the weather in {city}?"
        if stream:
            chunks = list(bound.stream(question))
            reply: Any = chunks[0]
            for chunk in chunks[1:]:
                reply += chunk
        else:
            reply = bound.invoke(question)
        assert reply.tool_calls, (city, reply)
        for call in reply.tool_calls:
            assert call["name"] == "get_weather" and set(call["args"]) == {"city"}
        assert not str(reply.content).lstrip().startswith("{"), reply.content
        if tool_choice == "get_weather":
            assert len(reply.tool_calls) == 1
