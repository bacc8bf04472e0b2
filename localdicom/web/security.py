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
* Token: with one configured, every request needs it, which is what makes binding to a
  network address reasonable: as ``Authorization: Bearer <token>``, as the password of
  ``Authorization: Basic`` (RFC 7617; any user name: MONAI Label and Orthanc's DICOMweb
  client can send only that), or as the cookie a browser gets from ``?token=<token>`` on
  a page's URL (a page load cannot carry a header).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from localdicom.web.urls import public_origin

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
EXPOSE_HEADERS = (
    "Content-Type, Content-Length, Content-Location, Location, Warning, ETag, X-Total-Count"
)
PREFLIGHT_MAX_AGE = "600"
#: Offered on a 401: a browser then asks for a user name and password (the token).
CHALLENGE = 'Bearer realm="localdicom", Basic realm="localdicom", charset="UTF-8"'
#: The cookie a browser gets from ``?token=`` (PAGE_TOKEN) on a page's URL.
COOKIE = "localdicom_token"
PAGE_TOKEN = "token"


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
    if policy.token is None or _authorized(policy.token, request):
        return
    raise _refuse(
        web.HTTPUnauthorized,
        "this server requires an access token: send 'Authorization: Bearer <token>', or "
        "Basic with the token as the password (the token given to 'localdicom serve "
        "--token' or LOCALDICOM_TOKEN); in a browser, open a page once as ...?token=<token>",
        **{"WWW-Authenticate": CHALLENGE},
    )


def _authorized(token: str, request: web.Request) -> bool:
    """The token as a bearer token or a Basic password (RFC 6750, RFC 7617), or the cookie
    a page got (see :func:`cookie_allowed`); compared in constant time."""
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return _same(given.strip(), token)
    if scheme == "basic":
        return _same(_basic_password(given.strip()), token)
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and cookie_allowed(request) and _same(cookie, cookie_value(token))


def _basic_password(credentials: str) -> str:
    """The password of Basic credentials (base64 of ``user:password``, UTF-8), or ""."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    _user, colon, password = decoded.partition(":")
    return password if colon else ""


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def cookie_value(token: str) -> str:
    """What the cookie holds: derived from the token, so that a cookie read off a disk does
    not reveal the token itself (it opens this server, and nothing else that takes it)."""
    return hmac.new(token.encode(), b"localdicom browser cookie", hashlib.sha256).hexdigest()


def cookie_allowed(request: web.Request) -> bool:
    """Whether the cookie may authorise this request: sent by this server's own pages.

    SameSite=Strict keeps it off requests from other sites, but ``localhost:3000`` is the
    same site as ``localhost:8042``: a page there could make the browser send it (a form's
    POST needs no CORS preflight). Browsers say where a request comes from in
    ``Sec-Fetch-Site`` and, on every POST or DELETE, ``Origin``: only same-origin requests
    and the user's own navigations (``none``) may use the cookie."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    return origin is None or normalize_origin(origin) in _own_origins(request)


def _own_origins(request: web.Request) -> set[str]:
    """The request's own origin, as the server sees it and as a reverse proxy reports it."""
    own = (f"{request.scheme}://{request.host}", public_origin(request))
    return {normalize_origin(origin) for origin in own}


def _token_to_cookie(token: str, request: web.Request) -> web.StreamResponse:
    """``?token=`` on a page's URL: the token becomes an HttpOnly, SameSite=Strict cookie,
    and the browser is sent to the same URL without it (out of the address bar and the
    history). The Location is relative to the URL's own folder, so that it holds behind a
    reverse proxy that adds a prefix."""
    if not _same(request.query[PAGE_TOKEN], token):
        raise _refuse(web.HTTPUnauthorized, "the token in the URL is not this server's token")
    kept = [(name, value) for name, value in request.query.items() if name != PAGE_TOKEN]
    location = "./" + request.rel_url.raw_path.rsplit("/", 1)[-1]
    if kept:
        location += "?" + str(request.rel_url.with_query(kept).raw_query_string)
    response = web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
    secure = public_origin(request).startswith("https:")
    response.set_cookie(
        COOKIE, cookie_value(token), path="/", httponly=True, samesite="Strict", secure=secure
    )
    return response


def browser_link(url: str, token: str) -> str:
    """The home page's URL that logs a browser in (printed at start)."""
    return f"{url}/?{PAGE_TOKEN}={quote(token, safe='')}"


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
    """Host guard, then origin check, then preflight, ``?token=`` or token; the order
    matters: a rebinding page must be refused even for preflights, and preflights carry no
    token."""
    policy = request.app[POLICY]
    _check_host(policy, request)
    _check_origin(policy, request)
    if _is_preflight(request):
        return _preflight(policy, request)
    if policy.token is not None and PAGE_TOKEN in request.query and request.method == "GET":
        return _token_to_cookie(policy.token, request)
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
