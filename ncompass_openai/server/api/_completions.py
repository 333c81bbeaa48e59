"""``POST /v1/completions``: builds the answer, or the stream of ``text_completion`` chunks."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from .._state import ServerState
from ..ledger._auth import Tenant
from ..protocol._schemas import CompletionRequest
from ..runtime._events import GenerationEvent
from ._billing import Billing
from ._logprobs import completion_logprobs
from ._serving import Envelope, collect, start, stream_response, usage_tail

__all__ = ["serve_completion"]


async def serve_completion(
    request: Request, state: ServerState, tenant: Tenant, req: CompletionRequest
) -> Response:
    """Answer one completion request (a list prompt is one batch, ``n`` choices per prompt)."""
    billing = Billing(state, tenant, "/v1/completions")
    prompts = req.prompts()
    total = len(prompts) * req.n
    stream = await start(
        state,
        tenant,
        req.model,
        lambda: state.backend.prepare_completion(req),
        None if req.stream else request,
    )
    env = Envelope("cmpl-", "text_completion", "text_completion", state.backend.model_id)

    if not req.stream:
        collected = await collect(request, state, tenant, billing, stream, total)
        if collected is None:
            return Response(status_code=499)  # nobody is listening; the status only shows in logs
        with_logprobs = req.logprobs is not None
        choices = [
            {
                "index": i,
                "text": prompts[i // req.n] + text if req.echo else text,
                "logprobs": completion_logprobs(collected.logprobs[i]) if with_logprobs else None,
                "finish_reason": collected.finish[i],
            }
            for i, text in enumerate(collected.texts)
        ]
        return env.response(choices, stream, collected.completion_tokens, billing)

    with_usage = req.include_usage()

    offsets = [0] * total  # where each choice's next token starts in its text

    def chunk(index: int, text: str, finish_reason: str | None, logprobs: dict[str, object] | None) -> str:
        choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
        return env.chunk(choice, with_usage=with_usage)

    def encode(event: GenerationEvent) -> str:
        logprobs = None
        if event.logprobs is not None:
            logprobs = completion_logprobs([event.logprobs], offsets[event.index])
            offsets[event.index] += len(event.logprobs.token.decode("utf-8", errors="replace"))
        return chunk(event.index, event.text, event.finish_reason, logprobs)

    head = [chunk(i, prompts[i // req.n], None, None) for i in range(total)] if req.echo else []
    return await stream_response(billing, stream, head, encode, usage_tail(env, with_usage))
