"""Where a streamlib server may listen, and the token that guards it: one rule for all.

Everything in streamlib that listens -- the dashboard, a served runtime (``streamlib node``),
the MCP server's HTTP transport, the WebRTC page -- binds 127.0.0.1 unless told otherwise,
and refuses to listen on any other address without a token. With a token, every request
proves it (compared in constant time, so response times leak nothing about it).
"""

from __future__ import annotations

import hmac
import ipaddress

__all__ = ["ListenRefused", "check_listen_address", "is_loopback", "token_matches"]


class ListenRefused(ValueError):
    """A server was asked to listen beyond this machine without a token."""


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen_address(host: str, token: str | None, what: str) -> None:
    """Refuse (:class:`ListenRefused`) to let ``what`` listen on a non-loopback ``host`` without a token."""
    if not is_loopback(host) and not token:
        raise ListenRefused(
            f"{what} refuses to listen on {host!r} without a token: anyone who can reach that address "
            f"could use it. Pass token=... (--token-file on the command line), or listen on 127.0.0.1"
        )


def token_matches(given: str | bytes | None, expected: str | None) -> bool:
    """Whether ``given`` is the expected token (constant time; no token expected: always)."""
    if not expected:
        return True
    if given is None:
        return False
    if isinstance(given, str):
        given = given.encode()
    return hmac.compare_digest(given, expected.encode())
