"""Cross-site request forgery: is a state-changing request really from the console's page?
Pure.

A page on another origin can make a logged-in dispatcher's browser send a POST with the
browser's HTTP Basic credentials: a form (``text/plain`` whose body is JSON), or
``fetch(…, {mode: "no-cors"})``. Three checks refuse it, each enough on its own:

1. The body must be declared ``application/json``. A form or a no-cors fetch can only send
   ``text/plain``, ``application/x-www-form-urlencoded`` or ``multipart/form-data``; any
   other type makes the browser ask first (a CORS preflight), which the console never
   allows.
2. ``Sec-Fetch-Site``, if sent, must be ``same-origin``; ``Origin``, if sent, must be the
   console's own (the scheme and ``Host`` of the request) or one of ``allowed_origins``
   (for a reverse proxy that changes them). Every current browser sends ``Origin`` on a
   cross-origin POST; a request with neither header comes from a non-browser client (curl,
   a script) and is let through to the token check.
3. The ``X-CSRF-Token`` header must hold the user's token, which only a same-origin page
   (or a client that logged in and read ``/api/state``) can read. A custom header is also
   something no form can set and no cross-origin fetch can send without a preflight.

A SameSite cookie would not do: another port of the same host is the same *site*.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection
from dataclasses import dataclass

TOKEN_HEADER = "x-csrf-token"  # noqa: S105 (a header's name)


@dataclass(frozen=True)
class Refusal:
    status: int
    detail: str


def csrf_token(secret: bytes, user: str) -> str:
    """The token of ``user`` for this console process (a new secret at each start)."""
    return hmac.new(secret, b"csrf\0" + user.encode(), "sha256").hexdigest()


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def origin_refusal(
    *,
    content_type: str | None,
    origin: str | None,
    fetch_site: str | None,
    scheme: str,
    host: str | None,
    allowed_origins: Collection[str] = (),
) -> Refusal | None:
    """Checks 1 and 2, before the login: a forged request costs no password check."""
    if _media_type(content_type) != "application/json":
        return Refusal(415, "the body must be sent as Content-Type: application/json")
    if fetch_site is not None and fetch_site != "same-origin":
        return Refusal(403, f"cross-site request refused (Sec-Fetch-Site: {fetch_site})")
    if origin is not None:
        own = f"{scheme}://{host}".lower() if host else None
        if origin.lower() != own and origin not in allowed_origins:
            return Refusal(403, f"cross-origin request refused (Origin: {origin[:100]})")
    return None


def token_refusal(given: str | None, expected: str) -> Refusal | None:
    """Check 3, once the user is known."""
    if given is None:
        return Refusal(403, "missing X-CSRF-Token header (the page gets it in /api/state)")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return Refusal(403, "wrong X-CSRF-Token: reload the page")
    return None
