"""FTFLOW_API_TOKEN's minimum strength: one rule, in deploy/settings.py, never echoing the token."""

from __future__ import annotations

import secrets

import pytest

from deploy.settings import MIN_TOKEN_CHARS, Settings, token_weakness


@pytest.mark.parametrize(
    "token, says",
    [
        ("", "is 0 characters"),
        ("hunter2", "is 7 characters"),
        ("x" * (MIN_TOKEN_CHARS - 1), f"is {MIN_TOKEN_CHARS - 1} characters"),
        ("a" * 40, "one character repeated 40 times"),
        ("ab" * 12, "only 2 different ones"),
        ("abc" * 8, "only 3 different ones"),
        ("Zq8-vR2_kP5mW9xT\n", "a trailing newline from a secret file"),
        ("Zq8-vR2 kP5mW9xTy", "holds a space"),
        ("Zq8-vR2_kP5mW9xTé", "non-ASCII"),
    ],
)
def test_a_weak_token_is_refused_naming_the_variable_and_the_fix_never_the_token(token, says):
    with pytest.raises(ValueError, match=says) as caught:
        Settings.from_env(bundle_dir="/tmp/b", api_token=token)
    message = str(caught.value)
    assert message.startswith("FTFLOW_API_TOKEN") and "secrets.token_urlsafe(24)" in message
    assert f"at least {MIN_TOKEN_CHARS} random characters" in message
    assert not token or token not in message


def test_a_weak_token_from_the_environment_says_so_and_is_not_echoed(monkeypatch):
    monkeypatch.setenv("FTFLOW_API_TOKEN", "hunter2")
    with pytest.raises(ValueError, match="environment variable FTFLOW_API_TOKEN is 7 characters") as caught:
        Settings.from_env(bundle_dir="/tmp/b")
    assert "hunter2" not in str(caught.value)


def test_random_tokens_and_no_token_are_accepted(monkeypatch):
    monkeypatch.delenv("FTFLOW_API_TOKEN", raising=False)
    for token in (secrets.token_urlsafe(12), secrets.token_urlsafe(24), secrets.token_hex(8), "abcd" * 4):
        assert len(token) >= MIN_TOKEN_CHARS and token_weakness(token) is None
        assert Settings.from_env(bundle_dir="/tmp/b", api_token=token).api_token == token
    assert Settings.from_env(bundle_dir="/tmp/b").api_token is None
