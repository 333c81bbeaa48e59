"""The README's LangChain and LlamaIndex snippets, run against the local server.

LlamaIndex's OpenAI integration pins openai<3, so its test cannot run in the main (openai 3.x) environment:
`make test` deselects it there and runs it in `.venv-openai2` (see the Makefile's test-compat), where
the package is checked to be importable first, so it cannot pass by skipping.
"""

from __future__ import annotations

import pytest

from ncompass_openai import NCompass


@pytest.fixture(scope="module")
def model_id(base_url: str, api_key: str) -> str:
    """The tenant's model, as an integration needs it named (``NCompass`` itself fills it in)."""
    with NCompass(api_key=api_key, base_url=base_url) as client:
        return client.resolve_model()


def test_langchain_chat_openai(base_url: str, api_key: str, model_id: str) -> None:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=base_url, api_key=api_key, model=model_id, max_tokens=12, temperature=0.5)

    reply = llm.invoke([SystemMessage("You are brief."), HumanMessage("Name a fast inference tool.")])
    assert isinstance(reply, AIMessage)
    assert isinstance(reply.content, str)
    assert reply.content
    assert reply.response_metadata["finish_reason"] in ("stop", "length")
    assert reply.usage_metadata is not None
    assert 0 < reply.usage_metadata["output_tokens"] <= 12

    chunks = list(llm.stream("Say something about GPUs."))
    assert len(chunks) > 1
    assert "".join(str(chunk.content) for chunk in chunks)

    replies = llm.batch(["One.", "Two."])
    assert len(replies) == 2
    assert all(isinstance(r.content, str) and r.content for r in replies)


def test_langchain_key_stays_out_of_reprs(base_url: str, api_key: str, model_id: str) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=base_url, api_key=api_key, model=model_id)
    assert api_key not in repr(llm)


def test_llamaindex_openai_like(base_url: str, api_key: str, model_id: str) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    chat_llm = OpenAILike(
        model=model_id,
        api_base=base_url,
        api_key=api_key,
        is_chat_model=True,
        context_window=8192,
        max_tokens=12,
    )
    reply = chat_llm.chat([ChatMessage(role="user", content="Name a fast inference tool.")])
    assert reply.message.role == "assistant"
    assert reply.message.content

    pieces = [chunk.delta for chunk in chat_llm.stream_chat([ChatMessage(role="user", content="Hi!")])]
    assert len(pieces) > 1
    assert "".join(p or "" for p in pieces)

    text_llm = OpenAILike(model=model_id, api_base=base_url, api_key=api_key, max_tokens=12)
    completion = text_llm.complete("Once upon a time")
    assert completion.text
    streamed = list(text_llm.stream_complete("Once upon a time"))
    assert len(streamed) > 1
    assert streamed[-1].text.startswith(streamed[0].text)
