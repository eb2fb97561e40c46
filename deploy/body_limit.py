"""A request body cap checked before anything reads the body: from Content-Length, then on the stream."""

from __future__ import annotations

from deploy.errors import ServiceError, error_response


def body_too_large(max_bytes: int, declared: int | None = None) -> ServiceError:
    """The 413 refusal of a body above `max_bytes` (of `declared` bytes by its Content-Length, if given)."""
    size = f"is {declared:,} bytes (its Content-Length), above" if declared is not None else "goes past"
    return ServiceError(
        413,
        ["body"],
        f"the request body {size} the limit of {max_bytes:,} bytes (the server's "
        f"FTFLOW_MAX_BODY_BYTES); send fewer or shorter texts",
        "body_too_large",
    )


class BodyLimit:
    """ASGI middleware: 413 for a body above `max_bytes`, without reading (or buffering) more of it.

    A declared Content-Length above the cap is refused before the app runs; a chunked body is counted
    as it arrives, and the read that crosses the cap raises the 413 in whoever reads it.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = [v for k, v in scope["headers"] if k == b"content-length"]
        if declared and declared[0].isdigit() and int(declared[0]) > self.max_bytes:
            refusal = body_too_large(self.max_bytes, int(declared[0]))
            return await error_response(refusal.status, refusal.errors)(scope, receive, send)
        received = 0

        async def capped_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise body_too_large(self.max_bytes)
            return message

        await self.app(scope, capped_receive, send)
