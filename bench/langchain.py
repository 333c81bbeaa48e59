"""Per-call cost of ``ChatNCompass`` against LangChain's own ``ChatOpenAI`` on the same local server.

The server (synthetic engine) runs in its own process. Variants run interleaved, block by block in a new
random order each round, so machine noise hits them alike; the report gives each one's median time per
call and its ratio to ``ChatOpenAI``. Rows:

- invoke: one model, ``invoke`` (max_tokens=4), sync;
- a model per call: a new model built for every ``invoke`` (LangChain code often builds one per chain
  or request): the cost of construction and of the connection pool it gets;
- abatch: one model, ``abatch`` of 16 prompts in one event loop (async client, concurrent requests).

Goal: ``ChatNCompass`` within 1.05x of ``ChatOpenAI`` on each row. Reads no environment variables; writes
the report to stdout and to bench/results/langchain.txt.

    python bench/langchain.py [--rounds 10] [--block 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import langchain_openai
import openai
from client import KEY, run_interleaved, synthetic_server  # bench/client.py: same server, same rounds
from langchain_openai import ChatOpenAI

from ncompass_openai import NCompass
from ncompass_openai._compat import httpx
from ncompass_openai.langchain import ChatNCompass

RESULT = Path(__file__).resolve().parent / "results" / "langchain.txt"


def _add_key(request: httpx.Request) -> None:
    if request.method == "POST":
        request.headers["Idempotency-Key"] = uuid.uuid4().hex


async def _add_key_async(request: httpx.Request) -> None:
    _add_key(request)


PROMPTS = [f"prompt {i}" for i in range(16)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=20, help="calls per variant per round")
    args = parser.parse_args()

    with synthetic_server() as base_url:
        with NCompass(api_key=KEY, base_url=base_url) as client:
            client.deployment.wait_until_running(timeout=60, poll_interval=0.1)
            model = client.resolve_model()
        common = {"max_tokens": 4, "temperature": 0}

        def openai_model() -> ChatOpenAI:
            return ChatOpenAI(api_key=KEY, base_url=base_url, model=model, max_retries=4, **common)  # type: ignore[arg-type]

        def ncompass_model() -> ChatNCompass:
            return ChatNCompass(api_key=KEY, base_url=base_url, model=model, **common)

        def keyed() -> ChatOpenAI:
            sync = httpx.Client(event_hooks={"request": [_add_key]})
            async_ = httpx.AsyncClient(event_hooks={"request": [_add_key_async]})
            return ChatOpenAI(  # type: ignore[arg-type]
                api_key=KEY,
                base_url=base_url,
                model=model,
                max_retries=4,
                http_client=sync,
                http_async_client=async_,
                **common,
            )

        plain, plain_keyed, ours = openai_model(), keyed(), ncompass_model()
        loop = asyncio.new_event_loop()
        rows: dict[str, dict[str, Callable[[], object]]] = {
            "invoke": {
                "ChatOpenAI": lambda: plain.invoke("hi"),
                "+ Idempotency-Key": lambda: plain_keyed.invoke("hi"),
                "ChatNCompass": lambda: ours.invoke("hi"),
            },
            "a model per call": {
                "ChatOpenAI": lambda: openai_model().invoke("hi"),
                "ChatNCompass": lambda: ncompass_model().invoke("hi"),
            },
            "abatch of 16": {
                "ChatOpenAI": lambda: loop.run_until_complete(plain.abatch(PROMPTS)),
                "+ Idempotency-Key": lambda: loop.run_until_complete(plain_keyed.abatch(PROMPTS)),
                "ChatNCompass": lambda: loop.run_until_complete(ours.abatch(PROMPTS)),
            },
        }
        variants = {(row, name): call for row, calls in rows.items() for name, call in calls.items()}
        for call in variants.values():  # warm up connections and caches
            for _ in range(3):
                call()
        per_call, _ = run_interleaved(variants, args.rounds, args.block)
        loop.close()

    lines = [
        "ChatNCompass vs ChatOpenAI on the local synthetic server (max_tokens=4)",
        f"langchain-openai {getattr(langchain_openai, '__version__', '?')}, "
        f"openai {openai.__version__}, python {sys.version.split()[0]}, {args.rounds} interleaved rounds x "
        f"{args.block} calls per variant; server in its own process",
        "",
        f"{'row':<18} {'variant':<18} {'ms/call':>9} {'ratio':>7}",
    ]
    worst = 0.0
    for row in rows:
        base = statistics.median(per_call[(row, "ChatOpenAI")])
        for name in rows[row]:
            median = statistics.median(per_call[(row, name)])
            worst = max(worst, median / base)
            lines.append(f"{row:<18} {name:<18} {median * 1000:>9.3f} {median / base:>6.3f}x")
    lines += [
        "",
        f"worst ratio {worst:.3f}x. ChatNCompass's requests carry NCompass's Idempotency-Key, and the",
        "server then keeps each answer for replay: the '+ Idempotency-Key' rows are ChatOpenAI with that",
        "header added (an httpx event hook), so the server-side cost is in both.",
    ]
    report = "\n".join(lines) + "\n"
    sys.stdout.write(report)
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
