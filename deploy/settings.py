"""The service's settings: typed, with defaults that work, read from FTFLOW_* environment variables."""

from __future__ import annotations

import os
import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

# Where each setting is read from; `Settings.from_env` arguments win over the environment.
ENVIRONMENT = {
    "api_token": "FTFLOW_API_TOKEN",
    "client_tokens": "FTFLOW_API_TOKENS",
    "max_batch": "FTFLOW_MAX_BATCH",
    "max_chars": "FTFLOW_MAX_CHARS",
    "max_body_bytes": "FTFLOW_MAX_BODY_BYTES",
    "poll_seconds": "FTFLOW_POLL_SECONDS",
    "threads": "FTFLOW_ORT_THREADS",
    "log_predictions": "FTFLOW_LOG_PREDICTIONS",
    "log_queue": "FTFLOW_LOG_QUEUE",
    "shadow": "FTFLOW_SHADOW",
    "canary_percent": "FTFLOW_CANARY_PERCENT",
    "shadow_queue": "FTFLOW_SHADOW_QUEUE",
    "header_timeout": "FTFLOW_HEADER_TIMEOUT",
    "body_timeout": "FTFLOW_BODY_TIMEOUT",
    "keep_alive": "FTFLOW_KEEP_ALIVE",
    "max_connections": "FTFLOW_MAX_CONNECTIONS",
    "max_requests": "FTFLOW_MAX_REQUESTS",
}
# A character sent as a JSON \uXXXX escape takes 6 bytes; a request holds texts and their pairs.
BYTES_PER_CHAR = 6
JSON_OVERHEAD_BYTES = 64 * 1024
# The shortest FTFLOW_API_TOKEN accepted. 16 random characters of the URL-safe alphabet are 96 bits:
# far beyond guessing over the network, and still easy to paste. Shorter is in practice a word or a
# pet phrase, which a dictionary finds; `secrets.token_urlsafe(24)` (32 characters) is the advice.
MIN_TOKEN_CHARS = 16
# Fewer distinct characters than this is a pattern (`aaaa...`, `abab...`, `abcabc...`), not a random token.
MIN_TOKEN_DISTINCT = 4
TOKEN_ADVICE = (
    f"use at least {MIN_TOKEN_CHARS} random characters, e.g. "
    "FTFLOW_API_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(24))')"
)
# Settings whose value is a secret: an error about them never shows the value.
SECRETS = {"api_token", "client_tokens"}
# A client's name in FTFLOW_API_TOKENS: what the prediction log records as the client that asked.
CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SHARED_CLIENT = "shared"  # FTFLOW_API_TOKEN's holder, beside the named clients


class Settings(BaseModel):
    """What the service needs to run; `from_env` fills the gaps from the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model_name: str | None = Field(None, description="registered model to serve at `alias`")
    bundle_dir: str | None = Field(None, description="serve this local bundle (a run's onnx/ folder) instead")
    alias: str = "champion"
    api_token: str | None = Field(
        None,
        description="bearer token required on /predict, /feedback, /model and the API docs "
        f"(at least {MIN_TOKEN_CHARS} characters, not a pattern)",
    )
    client_tokens: dict[str, str] | None = Field(
        None,
        description="per-client bearer tokens, FTFLOW_API_TOKENS='alice:TOKEN,bob:TOKEN': each answer is logged "
        "with the client that asked, and /feedback refuses a request id another client made",
    )
    max_batch: int = Field(64, ge=1, description="most texts in one request")
    max_chars: int = Field(
        20_000,
        ge=1,
        description="most characters in one text, as sent and once normalised as the model reads it; "
        "longer is refused, not cut",
    )
    max_body_bytes: int | None = Field(
        None,
        ge=1,
        description="largest request body; default: a full batch of the longest texts and pairs, "
        "every character escaped",
    )
    poll_seconds: float = Field(10.0, ge=0, description="how often the alias is checked (0: never)")
    threads: int = Field(
        1, ge=1, description="ONNX Runtime intra-op threads per request (1: requests run side by side)"
    )
    log_predictions: bool = Field(
        True,
        description="record every answer in the prediction log (where: "
        "FTFLOW_PREDICTION_LOG; texts only with FTFLOW_LOG_TEXTS=1)",
    )
    log_queue: int = Field(
        10_000,
        ge=1,
        description="log rows held in memory; when full the oldest are dropped and counted, a request never waits",
    )
    shadow: str | None = Field(
        None,
        description="alias of a second model (e.g. challenger) that answers every "
        "request too, off the request's path; both answers are logged",
    )
    canary_percent: float = Field(
        0.0,
        ge=0,
        le=100,
        description="share of requests (by a stable hash of the "
        "request id) answered by the second model instead (alias: shadow, else challenger)",
    )
    shadow_queue: int = Field(
        1_000, ge=1, description="requests waiting for the shadow model; when full the oldest are dropped and counted"
    )
    # How long a client may take, and how many it may be: `ftflow serve` (deploy/connections.py) reads these.
    # A request head is at most 16 KB (uvicorn's h11 limit): 10 s is generous on the slowest link and cuts a
    # stalled socket off early. 60 s for a body lets the largest default body (~15 MB) arrive at 2 Mbit/s.
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds for a request's line and headers to arrive, from when the connection is ready for "
        "them; later: 408 and closed",
    )
    body_timeout: float = Field(
        60.0, gt=0, description="seconds for a request body to arrive after its headers; later: 408 and closed"
    )
    keep_alive: int = Field(5, ge=1, description="seconds an idle connection is kept open for a next request")
    max_connections: int = Field(
        2_048,
        ge=1,
        description="open connections; a new one beyond it displaces the one that has waited longest for a request "
        "head, or gets 503 when every connection has a request in progress",
    )
    max_requests: int = Field(
        64,
        ge=1,
        description="requests handled at once (the probes /health and /ready aside); beyond it: 503 with Retry-After",
    )

    @field_validator("api_token")
    @classmethod
    def _strong_token(cls, token: str | None) -> str | None:
        if token is not None and (problem := token_weakness(token)):
            raise ValueError(f"{problem}; {TOKEN_ADVICE}")
        return token

    @field_validator("client_tokens", mode="before")
    @classmethod
    def _parse_client_tokens(cls, value):
        if not isinstance(value, str):
            return value
        pairs = [item.strip() for item in value.split(",") if item.strip()]
        parsed: dict[str, str] = {}
        for i, item in enumerate(pairs):
            name, sep, token = item.partition(":")
            if not sep or not CLIENT_NAME.match(name):
                raise ValueError(
                    f"FTFLOW_API_TOKENS: entry {i + 1} is not 'name:token' with a name of letters, digits, '.', '_' or '-' "
                    "(e.g. FTFLOW_API_TOKENS='alice:TOKEN,bob:TOKEN')"
                )
            if name in parsed or name == SHARED_CLIENT:
                raise ValueError(
                    f"FTFLOW_API_TOKENS: client name '{name}' is given twice or is reserved ({SHARED_CLIENT})"
                )
            parsed[name] = token
        return parsed

    @field_validator("client_tokens")
    @classmethod
    def _strong_client_tokens(cls, tokens: dict[str, str] | None) -> dict[str, str] | None:
        for name, token in (tokens or {}).items():
            if problem := token_weakness(token):
                raise ValueError(f"FTFLOW_API_TOKENS, client '{name}': {problem}; {TOKEN_ADVICE}")
        if tokens is not None and len(set(tokens.values())) != len(tokens):
            raise ValueError("FTFLOW_API_TOKENS: two clients share a token, so the log could not tell them apart")
        return tokens

    @property
    def guarded(self) -> bool:
        """Whether requests need a bearer token (the shared one, or a client's)."""
        return self.api_token is not None or bool(self.client_tokens)

    def tokens(self) -> list[tuple[str, str]]:
        """(client name, token) for every token the service takes."""
        shared = [(SHARED_CLIENT, self.api_token)] if self.api_token is not None else []
        return shared + list((self.client_tokens or {}).items())

    @model_validator(mode="after")
    def _fill_body_limit(self) -> Settings:
        if not (self.model_name or self.bundle_dir):
            raise ValueError("give a registered model name (ftflow serve NAME) or a bundle folder to serve")
        if (self.shadow or self.canary_percent) and not self.model_name:
            raise ValueError(
                "shadow and canary serve a second alias of a registered model: serve NAME from the "
                "registry (not a bundle folder), or unset FTFLOW_SHADOW and FTFLOW_CANARY_PERCENT"
            )
        if self.shadow == self.alias:
            raise ValueError(
                f"FTFLOW_SHADOW={self.shadow!r} is the served alias itself; shadow another alias, e.g. challenger"
            )
        if self.max_body_bytes is None:
            derived = 2 * self.max_batch * self.max_chars * BYTES_PER_CHAR + JSON_OVERHEAD_BYTES
            object.__setattr__(self, "max_body_bytes", derived)  # frozen: set once, while validating
        return self

    @property
    def second_alias(self) -> str | None:
        """The alias answering beside the served one (shadow or canary), or None when neither is on."""
        if self.shadow:
            return self.shadow
        return "challenger" if self.canary_percent else None

    @classmethod
    def from_env(cls, **given) -> Settings:
        """Settings from the given values, then FTFLOW_* variables, then the defaults."""
        values = {name: os.environ[var] for name, var in ENVIRONMENT.items() if os.environ.get(var)}
        values.update({k: v for k, v in given.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as e:
            raise ValueError("; ".join(_describe(err, given) for err in e.errors())) from None


def token_weakness(token: str) -> str | None:
    """Why `token` is too weak to be FTFLOW_API_TOKEN (never quoting it), or None when it will do."""
    if not all("!" <= c <= "~" for c in token):  # what a client can send after 'Bearer ' in a header
        return (
            "FTFLOW_API_TOKEN holds a space, a control or a non-ASCII character, which no client can send "
            "in an Authorization header (a trailing newline from a secret file?)"
        )
    if len(token) < MIN_TOKEN_CHARS:
        return f"FTFLOW_API_TOKEN is {len(token)} characters"
    distinct = len(set(token))
    if distinct == 1:
        return f"FTFLOW_API_TOKEN is one character repeated {len(token)} times"
    if distinct < MIN_TOKEN_DISTINCT:
        return f"FTFLOW_API_TOKEN is {len(token)} characters but only {distinct} different ones: a pattern, not random"
    return None


def _describe(err: ErrorDetails, given: dict) -> str:
    name = str(err["loc"][0]) if err["loc"] else ""
    if name in SECRETS:  # the message names the setting; the value is a secret and is not echoed
        own = err["type"] == "value_error"  # our validator's message starts with the variable's name
        msg = err["msg"].removeprefix("Value error, ") if own else f"{ENVIRONMENT[name]}: {err['msg']}"
        return f"environment variable {msg}" if given.get(name) is None else msg
    if name in ENVIRONMENT and given.get(name) is None:
        return f"environment variable {ENVIRONMENT[name]}={err['input']!r}: {err['msg']}"
    return f"{name}: {err['msg']}" if name else err["msg"].removeprefix("Value error, ")
