"""docs/server.md's table of the openai APIs the server serves is the server's own routes, regenerated here.

The table lists openai's API surfaces by their main call; a row says "served" exactly when the server's
OpenAPI schema has that route. When the server gains a route, this test fails and prints the new table.
"""

from __future__ import annotations

import re
from pathlib import Path

import openai

from ncompass_openai.server import ServerSettings, create_app

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "server.md"
# openai's API surfaces: (name, the client's resource, method, route of the main call).
SURFACES = [
    ("Chat Completions", "chat.completions", "post", "/v1/chat/completions"),
    ("Completions", "completions", "post", "/v1/completions"),
    ("Responses", "responses", "post", "/v1/responses"),
    ("Models", "models", "get", "/v1/models"),
    ("Embeddings", "embeddings", "post", "/v1/embeddings"),
    ("Files", "files", "post", "/v1/files"),
    ("Batches", "batches", "post", "/v1/batches"),
    ("Moderations", "moderations", "post", "/v1/moderations"),
    ("Images", "images", "post", "/v1/images/generations"),
    ("Audio", "audio.transcriptions", "post", "/v1/audio/transcriptions"),
    ("Fine-tuning", "fine_tuning.jobs", "post", "/v1/fine_tuning/jobs"),
    ("Vector stores", "vector_stores", "post", "/v1/vector_stores"),
    ("Conversations", "conversations", "post", "/v1/conversations"),
]
BEGIN, END = "<!-- served-apis: tests/server/test_served_apis.py -->", "<!-- /served-apis -->"


def _table() -> str:
    app = create_app(ServerSettings(engine="synthetic", db=":memory:", api_keys=["nc-served-apis-key"]))
    paths = app.openapi()["paths"]
    rows = ["| openai API | call | route | the local server and the gateway |", "|---|---|---|---|"]
    for name, resource, method, route in SURFACES:
        served = method in paths.get(route, {})
        rows.append(
            f"| {name} | `client.{resource}` | `{method.upper()} {route}` | {'served' if served else '404'} |"
        )
    return "\n".join(rows)


def test_every_surface_is_one_of_the_installed_openais() -> None:
    client = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    for _, resource, _, _ in SURFACES:
        target: object = client
        for part in resource.split("."):
            target = getattr(target, part)
    client.close()


def test_the_table_in_the_docs_is_the_servers_routes() -> None:
    text = PAGE.read_text()
    found = re.search(re.escape(BEGIN) + r"\n(.*?)\n" + re.escape(END), text, re.S)
    assert found is not None, f"docs/server.md lacks the table between {BEGIN} and {END}"
    expected = _table()
    assert found.group(1) == expected, f"docs/server.md's table is stale; it is now:\n{expected}"
    assert "| served |" in expected and "| 404 |" in expected  # both kinds of row are there
