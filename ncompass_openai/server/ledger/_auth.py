"""API keys: one key is one tenant. Keys are kept only as SHA-256 hashes and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from .._exceptions import Unauthenticated
from ._db import Database

__all__ = ["AUTHENTICATED", "Tenant", "TenantRegistry", "generate_api_key", "hash_key", "parse_authorization"]


AUTHENTICATED = "ncompass_tenant"
"""The ``scope["state"]`` entry of a request whose key a middleware has already checked."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def tenant_id_for(key_hash: str) -> str:
    # Derived from a second hash, so the id (which appears in logs and answers) reveals nothing
    # usable about the stored key hash.
    return "tnt_" + hashlib.sha256(("tenant:" + key_hash).encode()).hexdigest()[:20]


def generate_api_key() -> str:
    return "nc-local-" + secrets.token_urlsafe(24)


def parse_authorization(header: str | None) -> str | None:
    """The key from ``Bearer <key>`` or from the bare ``<key>`` form the 0.0.x client sent."""
    if not header:
        return None
    value = header.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    elif rest:
        return None
    return value or None


@dataclass(frozen=True)
class Tenant:
    id: str
    key_hash: str


class TenantRegistry:
    """The tenants this server answers, from the configured keys or those already in the database.

    Args:
        db: The ledger; only key hashes are written to it.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._tenants: list[Tenant] = []

    @property
    def tenants(self) -> list[Tenant]:
        return list(self._tenants)

    def stored_hashes(self) -> list[str]:
        return [
            row["key_hash"] for row in self._db.fetchall("SELECT key_hash FROM tenants ORDER BY created_at")
        ]

    def register(self, key_hashes: list[str]) -> None:
        """Make exactly these hashes the valid tenants (adding them to the database)."""
        now = time.time()
        tenants = []
        for key_hash in dict.fromkeys(key_hashes):
            tenant = Tenant(tenant_id_for(key_hash), key_hash)
            self._db.execute(
                "INSERT OR IGNORE INTO tenants (id, key_hash, created_at) VALUES (?, ?, ?)",
                (tenant.id, key_hash, now),
            )
            tenants.append(tenant)
        self._tenants = tenants

    def authenticate(self, authorization: str | None) -> Tenant:
        """The tenant of an ``Authorization`` header, or a 401."""
        key = parse_authorization(authorization)
        if key is None:
            raise Unauthenticated(
                "No API key: send it as `Authorization: Bearer <key>` (set NCOMPASS_API_KEY for the client).",
                code="invalid_api_key",
            )
        candidate = hash_key(key)
        found: Tenant | None = None
        # Walk every tenant whatever matches, so the time taken says nothing about the key.
        for tenant in self._tenants:
            if hmac.compare_digest(candidate, tenant.key_hash):
                found = tenant
        if found is None:
            raise Unauthenticated(
                "Invalid API key: it is not one of this server's keys. Check NCOMPASS_API_KEY, or the key "
                "`ncompass serve` printed when it started.",
                code="invalid_api_key",
            )
        return found
