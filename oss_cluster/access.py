"""Who may call: bearer tokens and the loopback rule, shared by the Serve API and the dashboard.

The rule everywhere: with a token configured, every request carries one (`Authorization: Bearer <token>`);
with none, only this machine (a loopback client) is answered.
"""

from __future__ import annotations

import hmac
import ipaddress

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str | None) -> bool:
    """True for this machine's own addresses (127.0.0.0/8, ::1, IPv4-mapped loopback, 'localhost')."""
    if not host:
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


def token_matches(given: str | None, tokens: list[str]) -> bool:
    """Whether `given` is one of `tokens`, compared in constant time."""
    return given is not None and any(hmac.compare_digest(given.encode(), token.encode()) for token in tokens)
