"""The gateway backend (``ncompass serve --engine openai``): OpenAI-compatible upstreams behind the protocol.

- ``_backend.py``: :class:`GatewayBackend`, its lifecycle and one ``prepare_*`` per API surface;
- ``_bodies.py``: what a request is forwarded with, or the 400 of an undeclared feature;
- ``_client.py``: the HTTP session over the replicas (``_replicas.py``), retries and upstream errors;
- ``_relay.py`` / ``_reading.py``: one answer read into the stream's typed events;
- ``_responses.py``: the Responses API's bodies and events; ``_answer_check.py``: formats and calls
  checked before they are sent; ``_commands.py``: ``--start-command`` / ``--stop-command``;
  ``_logprobs.py``: an upstream's logprobs read back.
"""

from __future__ import annotations

from ._backend import GatewayBackend

__all__ = ["GatewayBackend"]
