"""Stored responses (``store: true``): each tenant's answers of the Responses API, kept in the ledger.

A row keeps the response object as it was answered and the conversation it ends (the input messages,
the previous response's conversation before them, and this answer), so ``previous_response_id`` can
continue it. Another tenant's id is unknown: the routes answer 404 for it, as for a missing one.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ._db import Database

__all__ = ["ResponseStore"]


class ResponseStore:
    """``responses`` rows of one ledger."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def save(self, tenant: str, response: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        self._db.execute(
            "INSERT INTO responses (id, tenant_id, created_at, body, conversation) VALUES (?, ?, ?, ?, ?)",
            (response["id"], tenant, time.time(), json.dumps(response), json.dumps(conversation)),
        )

    def get(self, tenant: str, response_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """The response and its conversation, or ``None`` (missing, or another tenant's)."""
        row = self._db.fetchone(
            "SELECT body, conversation FROM responses WHERE id = ? AND tenant_id = ?", (response_id, tenant)
        )
        if row is None:
            return None
        return json.loads(row["body"]), json.loads(row["conversation"])

    def delete(self, tenant: str, response_id: str) -> bool:
        """Whether a response of this tenant was deleted."""
        return (
            self._db.execute("DELETE FROM responses WHERE id = ? AND tenant_id = ?", (response_id, tenant))
            > 0
        )
