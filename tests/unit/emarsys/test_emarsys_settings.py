"""Connection settings from the environment: which scheme, what is missing, what is malformed."""

from __future__ import annotations

import pytest

from dbt_emarsys_sync.emarsys import EmarsysConfigError, EmarsysSettings


def test_oauth_is_preferred_and_talks_to_v3():
    s = EmarsysSettings.from_env({"EMARSYS_CLIENT_ID": "cid", "EMARSYS_CLIENT_SECRET": "oauth-secret",
                                  "EMARSYS_USERNAME": "u001", "EMARSYS_SECRET": "wsse"})
    assert (s.scheme, s.base_url, s.user) == ("oauth", "https://api.emarsys.net/api/v3", "cid")
    assert "oauth-secret" not in repr(s)


def test_wsse_talks_to_v2_and_keeps_its_secret_out_of_the_repr():
    s = EmarsysSettings.from_env({"EMARSYS_USERNAME": "u001", "EMARSYS_SECRET": "wsse-secret",
                                  "EMARSYS_API_URL": "http://127.0.0.1:9/", "EMARSYS_RATE_LIMIT": "0",
                                  "EMARSYS_TIMEOUT": "2.5"})
    assert (s.scheme, s.base_url, s.rate_limit_per_minute, s.timeout_seconds) == \
        ("wsse", "http://127.0.0.1:9/api/v2", 0, 2.5)
    assert "wsse-secret" not in repr(s) and "wsse-secret" not in str(s)


@pytest.mark.parametrize("env,message", [
    ({}, "set EMARSYS_CLIENT_ID and EMARSYS_CLIENT_SECRET"),
    ({"EMARSYS_CLIENT_ID": "x"}, "EMARSYS_CLIENT_SECRET is not set"),
    ({"EMARSYS_SECRET": "x"}, "EMARSYS_USERNAME is not set"),
    ({"EMARSYS_USERNAME": "u", "EMARSYS_SECRET": "s", "EMARSYS_RATE_LIMIT": "lots"}, "EMARSYS_RATE_LIMIT must be an integer"),
    ({"EMARSYS_USERNAME": "u", "EMARSYS_SECRET": "s", "EMARSYS_RATE_LIMIT": "-5"}, "0 (no limit) or more"),
    ({"EMARSYS_USERNAME": "u", "EMARSYS_SECRET": "s", "EMARSYS_TIMEOUT": "soon"}, "EMARSYS_TIMEOUT must be a number"),
    ({"EMARSYS_USERNAME": "u", "EMARSYS_SECRET": "s", "EMARSYS_TIMEOUT": "0"}, "positive"),
    ({"EMARSYS_USERNAME": "u", "EMARSYS_SECRET": "s", "EMARSYS_API_URL": "api.emarsys.net"}, "must start with https://"),
])
def test_what_is_missing_or_malformed_is_named(env, message):
    with pytest.raises(EmarsysConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        EmarsysSettings.from_env(env)


@pytest.mark.parametrize("api_url, endpoint", [
    ("https://api.emarsys.net", "https://api.emarsys.net"),
    ("https://API.Emarsys.net/", "https://api.emarsys.net"),
    ("https://emarsys.example.com:8443/", "https://emarsys.example.com:8443"),
    ("http://127.0.0.1:8780", "http://127.0.0.1"),       # the sandbox takes a free port each start
    ("http://localhost:41234/", "http://localhost"),
    ("http://[::1]:9000", "http://[::1]"),
])
def test_the_endpoint_the_state_records_ignores_what_does_not_change_the_emarsys(api_url, endpoint):
    settings = EmarsysSettings.from_env({"EMARSYS_API_URL": api_url, "EMARSYS_USERNAME": "u", "EMARSYS_SECRET": "s"})
    assert settings.endpoint == endpoint
