"""Errors as a client sees them: a status code and one line a person can act on.

Handlers raise the helpers below; the middleware turns anything unexpected into a 500 whose
body says what failed without a stack trace (the trace goes to the server log).
"""

from __future__ import annotations

import logging

from aiohttp import web

from localdicom.dicom.qido import QueryError
from localdicom.dicom.uids import InvalidUID

logger = logging.getLogger(__name__)


def _error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return cls(text=message + "\n", content_type="text/plain")


def bad_request(message: str) -> web.HTTPException:
    return _error(web.HTTPBadRequest, message)


def not_found(message: str) -> web.HTTPException:
    return _error(web.HTTPNotFound, message)


def not_acceptable(message: str) -> web.HTTPException:
    return _error(web.HTTPNotAcceptable, message)


def unsupported_media_type(message: str) -> web.HTTPException:
    return _error(web.HTTPUnsupportedMediaType, message)


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Map domain errors to 4xx and hide internals of anything else behind a 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and not exc.text:
            exc.text = f"{exc.status} {exc.reason}\n"
            exc.content_type = "text/plain"
        raise
    except (InvalidUID, QueryError) as exc:
        raise bad_request(str(exc)) from None
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        raise _error(
            web.HTTPInternalServerError,
            "internal error while handling the request; the server log has the details",
        ) from None
