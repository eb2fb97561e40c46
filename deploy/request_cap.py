"""A cap on the requests the service works on at once: the excess is refused at once, not queued."""

from __future__ import annotations

from deploy.errors import error_response

# The probes stay outside the cap: a liveness check that fails because the service is busy gets a busy
# service restarted, which helps nobody. They cost microseconds and read no body.
PROBES = frozenset({"/health", "/ready"})


class RequestCap:
    """ASGI middleware: at most `max_requests` requests in progress; one more gets 503 with Retry-After.

    A request counts from its headers to its last answer byte, body reading included, so the cap also
    bounds the request bodies held in memory. Queued instead, the excess would wait for a thread of
    the pool while its client times out, and answer a client that has left.
    """

    def __init__(self, app, max_requests: int):
        self.app, self.max_requests = app, max_requests
        self.active = 0  # one event loop: no lock needed

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in PROBES:
            return await self.app(scope, receive, send)
        if self.active >= self.max_requests:
            refusal = error_response(
                503,
                [
                    {
                        "type": "overloaded",
                        "loc": ["request"],
                        "msg": f"the service is answering {self.active} requests, its limit (the server's "
                        f"FTFLOW_MAX_REQUESTS); retry after a second",
                    }
                ],
                # The body was not read: the connection cannot carry a next request.
                {"Retry-After": "1", "Connection": "close"},
            )
            return await refusal(scope, receive, send)
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
