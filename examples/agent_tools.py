# Reads NCOMPASS_API_KEY (your key) and NCOMPASS_BASE_URL (optional: another server, e.g. `ncompass serve`).
# An openai-agents SDK agent with a function tool, on nCompass (pip install openai-agents): the SDK takes
# any openai client, so it gets an AsyncNCompass, inside one session that stops when the block ends.
import asyncio

from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)

from ncompass_openai import AsyncNCompass


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny and 21 C in {city}."


async def main() -> None:
    set_tracing_disabled(True)  # the SDK would otherwise send its traces to OpenAI
    async with AsyncNCompass() as client:
        await client.deployment.ensure_running()  # a cold start takes minutes: waited for before billing
        model = OpenAIChatCompletionsModel(model=await client.resolve_model(), openai_client=client)
        agent = Agent(
            name="weather",
            instructions="Answer questions about the weather with the get_weather tool.",
            tools=[get_weather],
            model=model,
            model_settings=ModelSettings(max_tokens=60, temperature=0, tool_choice="required"),
            tool_use_behavior="stop_on_first_tool",  # the tool's result is the answer
        )
        async with client.session(idle_timeout=300) as session:
            result = await Runner.run(agent, "What is the weather in Paris?", max_turns=2)
            print(result.final_output)
        print(f"session {session.id} stopped")


asyncio.run(main())
