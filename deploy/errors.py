"""The service's error answers: one JSON shape for every refusal, naming where the problem is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field


class ErrorItem(BaseModel):
    """One problem, at one place of the request."""

    type: str = Field(description="machine-readable kind, e.g. string_too_long, unauthorized")
    loc: list[str | int] = Field(description='where: ["body", "texts", 3], ["header", "authorization"], ["body"]')
    msg: str = Field(description="what is wrong and how to fix it")


class ErrorResponse(BaseModel):
    """The body of every 4xx and 503 answer of /predict and /model."""

    detail: list[ErrorItem]
    message: str = Field(description='the problems in one line, each after its place ("texts[3]: ...")')


class ServiceError(Exception):
    """A request the service refuses: HTTP status, the place in the request (loc), and why."""

    def __init__(self, status: int, loc: list, msg: str, kind: str, headers: dict | None = None):
        super().__init__(msg)
        self.status, self.headers = status, headers
        self.errors = [{"type": kind, "loc": loc, "msg": msg}]

    @classmethod
    def of(cls, status: int, errors: list[dict]) -> ServiceError:
        """A refusal with several problems (dicts with type, loc, msg)."""
        first = errors[0]
        error = cls(status, first["loc"], first["msg"], first["type"])
        error.errors = errors
        return error


def describe(errors: list[dict]) -> str:
    """The errors in one line: 'texts[1]: Input should be a valid string; ...' (body fields without 'body')."""
    parts = []
    for e in errors:
        loc = [str(p) for p in e["loc"]]
        loc = loc[1:] if loc[:1] == ["body"] and len(loc) > 1 else loc
        where = loc[0] + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:]) if loc else ""
        parts.append(f"{where}: {e['msg']}" if where and where != "body" else e["msg"])
    return "; ".join(parts)


def error_response(
    status: int, errors: Sequence[Mapping[str, Any]], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON answer for `errors` (dicts with type, loc, msg); the input is never echoed back."""
    detail = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in errors]
    return JSONResponse(status_code=status, headers=headers, content={"detail": detail, "message": describe(detail)})


def error_responses(*statuses: int) -> dict:
    """The OpenAPI `responses` entries for these error statuses."""
    why = {
        401: "missing or wrong bearer token",
        413: "request body above FTFLOW_MAX_BODY_BYTES",
        422: "the request breaks a rule of its schema (the message names the field)",
        503: "no model loaded yet, FTFLOW_MAX_REQUESTS requests in progress, or (/feedback) the prediction log "
        "cannot be written now (Retry-After says when to retry)",
    }
    return {s: {"model": ErrorResponse, "description": why[s]} for s in statuses}
