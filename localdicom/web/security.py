"""Who may talk to the server: CORS for viewers on other origins, a DNS-rebinding guard and
an optional bearer token.

A server on 127.0.0.1 is reachable by every web page the user opens. Three things keep such
pages from reading or changing the archive:

* CORS: a page on another origin reads responses only when ``Access-Control-Allow-Origin``
  names it. Loopback origins (a viewer on ``http://localhost:3000``) are allowed by default,
  others only when configured; requests that carry a refused ``Origin`` are refused outright,
  so a foreign page cannot write or delete either.
* Host guard: DNS rebinding makes ``evil.example`` resolve to 127.0.0.1, which turns the
  page's origin into a "same-origin" one. Its requests still say ``Host: evil.example``, so a
  server bound to loopback refuses every Host that is not a loopback name.
* Token: with one configured, every request needs ``Authorization: Bearer <token>``, which is
  what makes binding to a network address reasonable.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ANY_ORIGIN = "*"
LOOPBACK_ORIGIN = re.compile(
    r"^https?://(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d{1,5})?$", re.IGNORECASE
)
ALLOW_METHODS = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
ALLOW_HEADERS = (
    "Accept, Accept-Encoding, Authorization, Cache-Control, Content-Type, If-Modified-Since, "
    "If-None-Match, Range, X-Requested-With"
)
EXPOSE_HEADERS = "Content-Type, Content-Length, Content-Location, Location, Warning, ETag"
PREFLIGHT_MAX_AGE = "600"


@dataclass(frozen=True)
class Policy:
    """The security settings the middleware enforces (built once from Settings)."""

    #: Origins allowed besides the loopback ones; ``*`` allows every origin.
    extra_origins: frozenset[str] = frozenset()
    #: Refuse Host headers that are not loopback names (set when bound to loopback).
    guard_host: bool = True
    #: Required bearer token, or None.
    token: str | None = None

    @classmethod
    def build(cls, bind_host: str, origins: Iterable[str], token: str | None) -> Policy:
        return cls(
            extra_origins=frozenset(normalize_origin(origin) for origin in origins),
            guard_host=is_loopback_address(bind_host),
            token=token or None,
        )

    def origin_allowed(self, origin: str, request: web.Request) -> bool:
        """Loopback origins, configured ones, and the request's own origin (same-origin
        requests carry ``Origin`` too, e.g. the home page's uploads)."""
        normalized = normalize_origin(origin)
        return (
            ANY_ORIGIN in self.extra_origins
            or normalized in self.extra_origins
            or LOOPBACK_ORIGIN.match(normalized) is not None
            or normalized == normalize_origin(f"{request.scheme}://{request.host}")
        )

    def allow_origin_value(self, origin: str) -> str:
        """What ``Access-Control-Allow-Origin`` says: the origin itself, or ``*`` only when
        the user chose ``--cors-origin '*'``."""
        return ANY_ORIGIN if ANY_ORIGIN in self.extra_origins else origin


def normalize_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def is_loopback_address(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: the bind addresses a rebinding attack
    targets."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The name part of a Host header: ``[::1]:8042`` -> ``::1``, ``a:80`` -> ``a``."""
    host = host_header.strip()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@functools.lru_cache(maxsize=64)
def _names_loopback(host_header: str) -> bool:
    """Remembered: every request carries the same Host header, and parsing it as an address
    costs more than the rest of the check."""
    return is_loopback_address(host_name(host_header))


POLICY = web.AppKey("security_policy", Policy)


def _refuse(cls: type[web.HTTPException], message: str, **headers: str) -> web.HTTPException:
    return cls(text=message + "\n", content_type="text/plain", headers=headers or None)


def _check_host(policy: Policy, request: web.Request) -> None:
    host = request.headers.get("Host")
    if not policy.guard_host or host is None or _names_loopback(host):
        return
    raise _refuse(
        web.HTTPMisdirectedRequest,
        f"Host {host!r} is not a loopback name: this server listens on a loopback address and "
        "answers only requests for localhost, 127.0.0.1 or [::1] (this protects it from DNS "
        "rebinding). Use http://127.0.0.1:PORT/, or start it on a network address with --host.",
    )


def _check_origin(policy: Policy, request: web.Request) -> None:
    origin = request.headers.get("Origin")
    if origin is None:
        return
    if not policy.origin_allowed(origin, request):
        raise _refuse(
            web.HTTPForbidden,
            f"origin {origin} may not use this server; allow it with "
            f"'localdicom serve ... --cors-origin {origin}'",
        )


def _check_token(policy: Policy, request: web.Request) -> None:
    if policy.token is None:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), policy.token.encode()
    ):
        return
    raise _refuse(
        web.HTTPUnauthorized,
        "this server requires an access token: send 'Authorization: Bearer <token>' "
        "(the token given to 'localdicom serve --token' or LOCALDICOM_TOKEN)",
        **{"WWW-Authenticate": 'Bearer realm="localdicom"'},
    )


def _is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def _preflight(policy: Policy, request: web.Request) -> web.Response:
    """Answer a CORS preflight for any path, before routing (which would say 405), and
    without the token (browsers never send credentials on a preflight)."""
    origin = request.headers["Origin"]
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": policy.allow_origin_value(origin),
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
            "Vary": "Origin",
        },
    )


@web.middleware
async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host guard, then origin check, then preflight or token; the order matters: a
    rebinding page must be refused even for preflights, and preflights carry no token."""
    policy = request.app[POLICY]
    _check_host(policy, request)
    _check_origin(policy, request)
    if _is_preflight(request):
        return _preflight(policy, request)
    _check_token(policy, request)
    return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: CORS headers on every answer to an allowed origin, errors and
    streamed responses included, so a viewer can read a 404's message."""
    origin = request.headers.get("Origin")
    policy = request.app.get(POLICY)
    if origin is None or policy is None or "Access-Control-Allow-Origin" in response.headers:
        return
    vary = response.headers.get("Vary")
    if vary is None or "origin" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
    if policy.origin_allowed(origin, request):
        response.headers["Access-Control-Allow-Origin"] = policy.allow_origin_value(origin)
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"


def install(
    app: web.Application, bind_host: str, origins: Iterable[str], token: str | None
) -> None:
    """Put the policy, the middleware (outermost, so refusals skip everything else) and the
    CORS response hook on APP."""
    app[POLICY] = Policy.build(bind_host, origins, token)
    app.middlewares.insert(0, security_middleware)
    app.on_response_prepare.append(add_cors_headers)
