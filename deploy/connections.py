"""What a connection may hold of the service: deadlines on reading a request, and a cap on open connections.

uvicorn's h11 protocol reads a request head and body for as long as the client cares to send them:
a socket that sends half a request line, headers without their blank line, or a declared body that
never comes stays open for good, and enough of them use up the process's file descriptors, after
which /health stops answering. `guarded_protocol` gives uvicorn a protocol class that

- closes a connection whose request head (request line and headers) is not complete within
  `header_timeout` seconds of the connection being ready for it (a 408 when part of a head came);
- closes a connection whose body is not complete within `body_timeout` seconds of its head
  (a 408 when no answer was started; the app sees a disconnect);
- keeps at most `max_connections` open: a new connection beyond the cap displaces the one that has
  waited longest for a request head (stalled or idle keep-alive), so a flood of stalled sockets
  cannot lock /health out; when every open connection has a request in progress, the newcomer gets
  a 503 and is closed without a byte of it being read.

Both deadlines are totals, not idle timers: a client that sends one byte a second is still cut off.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from deploy.errors import describe

log = logging.getLogger("ftflow.serve")
# File descriptors kept for everything but client sockets: the model and tokenizer files, the prediction
# log's writes, the registry's HTTP connections, the listening socket, logging.
RESERVED_FILES = 256
# Connections the kernel queues before the service accepts them: uvicorn's default, and also how many
# asyncio accepts in one go.
BACKLOG = 2048


@dataclass
class ConnectionGuard:
    """The limits, and the one server's connections that wait for a request head (oldest first)."""

    header_timeout: float
    body_timeout: float
    max_connections: int
    waiting: dict[GuardedH11Protocol, None] = field(default_factory=dict)  # a dict keeps insertion order
    displaced: int = 0
    refused: int = 0

    def displace_oldest(self, newcomer: GuardedH11Protocol) -> bool:
        """Close the connection that has waited longest for a request head; False when none is waiting."""
        oldest = next((c for c in self.waiting if c is not newcomer), None)
        if oldest is None:
            return False
        self.displaced += 1
        oldest.time_out("the server is at FTFLOW_MAX_CONNECTIONS and this connection had sent no full request")
        return True


def _raw_answer(status: int, reason: str, kind: str, loc: list[str], msg: str, extra: str = "") -> bytes:
    # Written straight to the socket: no request was parsed, so h11 has no response to frame.
    detail = [{"type": kind, "loc": loc, "msg": msg}]
    body = json.dumps({"detail": detail, "message": describe(detail)}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"connection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's head and body, and a connection cap."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase: str | None = None  # "head", "body", or None (a request being answered; closed)
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.guard.max_connections and not self.guard.displace_oldest(self):
            self.guard.refused += 1
            msg = "the server holds FTFLOW_MAX_CONNECTIONS connections, each with a request in progress; retry"
            transport.write(
                _raw_answer(503, "Service Unavailable", "overloaded", ["connection"], msg, "retry-after: 1\r\n")
            )
            transport.close()
            return
        self._follow()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter(None)
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Arm the deadline of the part of a request the client owes now (h11 knows which)."""
        theirs = self.conn.their_state
        if self.transport.is_closing():
            self._enter(None)
        elif theirs is h11.IDLE:
            self._enter("head")
        elif theirs is h11.SEND_BODY:
            self._enter("body")
        else:  # the request is in (being answered), or the connection is done
            self._enter(None)

    def _enter(self, phase: str | None) -> None:
        if phase == self.phase:
            return  # a deadline runs from the start of its phase: more bytes do not extend it
        self.phase = phase
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.guard.waiting.pop(self, None)
        if phase == "head":
            self.guard.waiting[self] = None
            self.deadline = self.loop.call_later(self.guard.header_timeout, self._head_late)
        elif phase == "body":
            self.deadline = self.loop.call_later(self.guard.body_timeout, self._body_late)

    def _head_late(self) -> None:
        self.time_out(
            f"the request line and headers did not arrive within {self.guard.header_timeout:g} s "
            f"(the server's FTFLOW_HEADER_TIMEOUT)"
        )

    def time_out(self, why: str) -> None:
        """Close a connection that owes a request head: a 408 when part of one came, silence when idle."""
        self._enter(None)
        if self.transport.is_closing():
            return
        buffered, _ = self.conn.trailing_data
        if buffered:  # an idle keep-alive connection is closed without a word, as uvicorn's own timer does
            self.transport.write(_raw_answer(408, "Request Timeout", "request_timeout", ["header"], why))
        self.transport.close()

    def _body_late(self) -> None:
        self._enter(None)
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            msg = (
                f"the request body did not arrive within {self.guard.body_timeout:g} s of its headers "
                f"(the server's FTFLOW_BODY_TIMEOUT); send it faster, or in smaller requests"
            )
            detail = [{"type": "request_timeout", "loc": ["body"], "msg": msg}]
            body = json.dumps({"detail": detail, "message": describe(detail)}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            try:
                for event in (
                    h11.Response(status_code=408, headers=headers, reason=b"Request Timeout"),
                    h11.Data(data=body),
                    h11.EndOfMessage(),
                ):
                    self.transport.write(self.conn.send(event) or b"")
            except h11.LocalProtocolError:  # h11 is past the point of answering: closing says enough
                pass
        if cycle is not None:
            # The app's next receive() is a disconnect and whatever it answers is dropped: it stops reading.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """The protocol class for one server: its connections share `guard` (limits and waiting list)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": guard})


def fit_open_files(wanted: int, backlog: int = BACKLOG) -> tuple[int, int]:
    """The connection cap and listen backlog the open-file limit allows, its soft limit raised to the hard one.

    Each connection is a file descriptor, and so is each connection accepted in one burst before the
    ones it displaces are closed (asyncio accepts up to `backlog` at a time and closes on its next
    turn). Past the limit accept() fails and nobody, /health included, gets in for a second; a hard
    limit too low for both lowers them (with a warning) instead.
    """
    try:
        # optional: resource is Unix-only; elsewhere the limit is left as it is
        import resource
    except ImportError:  # not a Unix: no limit to read
        return wanted, backlog
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # macOS refuses RLIM_INFINITY as a soft limit; keep what there is
            pass
    if soft == resource.RLIM_INFINITY or soft - RESERVED_FILES >= wanted + backlog:
        return wanted, backlog
    budget = max(soft - RESERVED_FILES, 32)
    fitted_backlog = max(min(backlog, budget // 4), 16)
    fitted = max(min(wanted, budget - fitted_backlog), 16)
    log.warning(
        "the open-file limit is %d: FTFLOW_MAX_CONNECTIONS=%d lowered to %d (listen backlog %d); raise the limit "
        "(ulimit -n, or the container's nofile) for more",
        soft,
        wanted,
        fitted,
        fitted_backlog,
    )
    return fitted, fitted_backlog
