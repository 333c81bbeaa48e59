# Reads NCOMPASS_API_KEY (and NCOMPASS_BASE_URL if set): the upstream this script puts a gateway in front of.
# `ncompass serve --engine openai`, run here in-process: tenants, sessions and their billing in front of an
# OpenAI-compatible server (here the nCompass one the variables name; vLLM, llama-server or Ollama work
# the same way). The tenant's client talks to the gateway exactly as to any nCompass server.
import os

from ncompass_openai import NCompass
from ncompass_openai.server import LocalServer

TENANT_KEY = "tenant-key-of-this-example"

with NCompass() as upstream:  # the operator's own account upstream: its session bills the gateway's traffic
    upstream.deployment.ensure_running()
    with (
        upstream.session(),
        LocalServer(
            engine="openai",
            upstream=[str(upstream.base_url).rstrip("/")],
            upstream_api_key=os.environ["NCOMPASS_API_KEY"],
            upstream_supports=["responses"],  # this upstream serves /v1/responses: forwarded, not refused
            api_keys=[TENANT_KEY],
        ) as gateway,
        NCompass(api_key=TENANT_KEY, base_url=gateway.base_url) as tenant,
    ):
        with tenant.session() as session:
            chat = tenant.chat.completions.create(
                messages=[{"role": "user", "content": "Say hello in French."}], max_tokens=16
            )
            print("chat:", " ".join((chat.choices[0].message.content or "").split()))
            first = tenant.responses.create(input="Name a colour.", max_output_tokens=16)
            print("responses:", " ".join(first.output_text.split()))
            # The gateway keeps the conversation: the upstream is sent it whole, and stores nothing.
            follow = tenant.responses.create(
                input="And another one?", previous_response_id=first.id, max_output_tokens=16
            )
            print("continued:", " ".join(follow.output_text.split()))
        billed = tenant.sessions.retrieve(session.id)
        print(f"the tenant's session: {billed.requests} requests, {billed.billed_seconds:.2f} s billed")
