"""Secrets by reference: `${ENV_NAME}` in a config value, expanded only in memory when a source opens.

Everything the pipeline writes or shows (params, tags, run-folder files, artifacts, the model
card, logs, Prefect parameters, error messages, summaries) goes through `redact_text`, which keeps
references as they are and masks literal credentials: the password of a URL's user part
(`postgresql://reader:***@db/x`) and the values of credential-like query parameters
(`?token=***`). One module, so every writer masks the same way.
"""

from __future__ import annotations

import os
import re
import warnings
from urllib.parse import parse_qsl, urlsplit

MASK = "***"
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Query parameter names that carry credentials (AWS/Azure/GCS signed URLs, API keys, tokens).
SECRET_PARAM = re.compile(
    r"(?i)^(x-amz-security-token|x-amz-signature|x-amz-credential|x-goog-signature|x-goog-credential|"
    r".*(token|password|passwd|pwd|secret|key|sig|signature|credential|auth|session).*)$"
)
# A URL anywhere in a string: scheme://… up to whitespace or a closing quote.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
# Where a URL's user part may begin: right after the scheme, a user name, then ':' (the password follows).
_USER = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#\s'\"<>`]*:")
PASSWORD_MAX = 256  # the longest password looked for; a line break ends one
_QUERY_PAIR = re.compile(r"(?P<sep>[?&;])(?P<key>[^=&;#]+)=(?P<value>[^&;#]*)")


class SecretReferenceError(ValueError):
    """A `${NAME}` reference names an environment variable that is not set."""


def _is_reference(value: str) -> bool:
    return bool(REFERENCE.fullmatch(value))


def _is_literal(value: str | None) -> bool:
    # Already masked (a config read back from a run folder) is no longer a credential to warn about.
    if not value:
        return False
    return value != MASK and not _is_reference(value)


def redact_url(url: str) -> str:
    """The URL with a literal password and credential-like query values masked; references kept."""

    def mask_query(m: re.Match) -> str:
        key, value = m["key"], m["value"]
        if SECRET_PARAM.match(key) and value and not _is_reference(value):
            return f"{m['sep']}{key}={MASK}"
        return m.group(0)

    return _QUERY_PAIR.sub(mask_query, _mask_passwords(url))


def password_end(text: str, start: int) -> int | None:
    """Where the password that begins at `text[start]` ends (the index of its '@'), or None: no password.

    Read as both parsers that open these URLs read it, and the longer of the two masked: urllib
    ends the user part at the last '@' before the first '/', '?', '#' (so 'p@ss' is a password);
    SQLAlchemy at the first '@' (so 'pa/ss', 'ab#c', 'a?b' and 'pa ss' are passwords too). The cost: in
    'http://host:8080/x?mail=a@b' the port and path are masked too, as SQLAlchemy would read them.
    """
    # A line break or the next URL's '://' ends the search: in free text an '@' further on is someone's address.
    window = re.split(r"[\r\n]|://", text[start : start + PASSWORD_MAX + 1], maxsplit=1)[0]
    netloc = re.search(r"[/?#]", window)  # urllib's user part may hold spaces and '@'s
    last_in_netloc = window.rfind("@", 0, netloc.start() if netloc else len(window))
    end = last_in_netloc if last_in_netloc >= 0 else window.find("@")
    return None if end < 0 else start + end


def url_password(url: str) -> str | None:
    """The password of `url`'s user part as the masker reads it (see password_end), or None."""
    user = _USER.match(url)
    end = password_end(url, user.end()) if user else None
    return url[user.end() : end] if user and end is not None else None


def _mask_passwords(text: str) -> str:
    """`text` with the literal password of every URL's user part masked (references kept)."""
    out, pos = [], 0
    while m := _USER.search(text, pos):
        end = password_end(text, m.end())
        if end is None:
            out.append(text[pos : m.end()])
            pos = m.end()
            continue
        pw = text[m.end() : end]
        out.append(text[pos : m.end()] + (pw if not pw or _is_reference(pw) else MASK) + "@")
        pos = end + 1
    return "".join(out) + text[pos:]


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with every URL's literal credentials masked and each value in `secrets` replaced by ***."""
    for value in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(value, MASK)
    return _URL.sub(lambda m: redact_url(m.group(0)), _mask_passwords(text))


def literal_credentials(url: str) -> list[str]:
    """What in `url` is a literal credential (a password, a `token=` value), by name; [] when none."""
    found: list[str] = []
    if _is_literal(url_password(url)):
        found.append("the password of the user part")
    try:
        parts = urlsplit(_mask_passwords(url))
    except ValueError:
        return found
    found += [
        f"query parameter '{k}'"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if SECRET_PARAM.match(k) and _is_literal(v)
    ]
    return found


def warn_literal_credentials(field: str, url: str) -> None:
    """One warning per field that holds a literal credential, naming where and showing only the masked form."""
    found = literal_credentials(url)
    if found:
        what = "PASSWORD" if found[0].startswith("the password") else found[0].split("'")[1].upper()
        name = re.sub(r"[^A-Z0-9]+", "_", f"{field.rsplit('.', 1)[-1]}_{what}".upper()).strip("_")
        warnings.warn(
            f"{field} holds a literal credential ({', '.join(found)}): {redact_url(url)}. It is written "
            f"everywhere masked as {MASK}, so a re-run from the saved config cannot open the source. "
            f"Put the secret in an environment variable and write a reference instead, e.g. ${{{name}}}",
            UserWarning,
            stacklevel=2,
        )


def literals_as_references(url: str, prefix: str) -> tuple[str, dict[str, str]]:
    """(`url` with each literal credential replaced by a `${PREFIX_...}` reference, {name: value} to export).

    For a URL that must pass through a store that keeps what it is given, such as a Prefect flow-run
    parameter: the process exports the values, the store keeps only the references, and
    `expand_references` gives back `url` character for character (the password as `password_end` reads it,
    so one SQLAlchemy accepts unencoded, such as 'pa/ss' or 'a?b', moves whole).
    """
    exported: dict[str, str] = {}

    def reference(kind: str, value: str) -> str:
        name = re.sub(r"[^A-Z0-9]+", "_", f"{prefix}_{kind}".upper()).strip("_")
        while name in exported:  # the same query key twice: each value keeps its own variable
            name += "_"
        exported[name] = value
        return f"${{{name}}}"

    user = _USER.match(url)
    end = password_end(url, user.end()) if user else None
    if user and end is not None and _is_literal(url[user.end() : end]):
        url = url[: user.end()] + reference("password", url[user.end() : end]) + url[end:]

    def query_reference(m: re.Match) -> str:
        if SECRET_PARAM.match(m["key"]) and _is_literal(m["value"]):
            return f"{m['sep']}{m['key']}={reference(m['key'], m['value'])}"
        return m.group(0)

    return _QUERY_PAIR.sub(query_reference, url), exported


def expand_references(value: str, field: str) -> tuple[str, tuple[str, ...]]:
    """(value with each `${NAME}` replaced by the environment's value, the values substituted).

    Call only where the source opens; pass the substituted values to `redact_text` for any
    error built from the expanded string. A missing variable is an error naming it (not a value).
    """
    used: list[str] = []

    def substitute(m: re.Match) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise SecretReferenceError(
                f"{field} refers to ${{{name}}}, but the environment variable {name} is not set; "
                f"export it in the shell (or the worker's environment) that runs the flow"
            )
        used.append(os.environ[name])
        return os.environ[name]

    return REFERENCE.sub(substitute, value), tuple(used)
