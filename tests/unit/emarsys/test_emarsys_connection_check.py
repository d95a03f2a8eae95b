"""`check_connection()` (what `dbt-emarsys-sync validate` runs): GET /field, and what each failure says."""

from __future__ import annotations

import socket

import pytest

from dbt_emarsys_sync.emarsys import (AuthError, EmarsysClient, EmarsysConfigError, EmarsysSettings,
                                      PermissionDenied, RateLimiter, TransientError)


@pytest.mark.parametrize("scheme", ["oauth", "wsse"])
def test_a_working_connection_reports_where_and_who(emu, scheme):
    with emu.client(scheme) as client:
        info = client.check_connection()
    assert info.scheme == scheme and info.field_count > 40
    assert info.base_url.endswith("/api/v3" if scheme == "oauth" else "/api/v2")
    assert info.user == (emu.config.client_id if scheme == "oauth" else emu.config.username)


@pytest.mark.parametrize("scheme,bad", [("oauth", {"client_secret": "nope"}), ("wsse", {"secret": "nope"}),
                                        ("oauth", {"client_id": "unknown-client"})])
def test_rejected_credentials_say_so(emu, scheme, bad):
    with emu.client(scheme, **bad) as client, pytest.raises(AuthError, match="^credentials rejected"):
        client.check_connection()


@pytest.mark.parametrize("body", ["plain", "envelope"])
def test_a_missing_permission_names_it(emu, body):
    emu.settings(forbidden_body=body)
    emu.post("/_emulator/seed", {"users": [{"name": "writer", "secret": "w-secret", "scheme": "oauth",
                                            "permissions": ["contact.update", "contact.create"]}]})
    with emu.client("oauth", client_id="writer", client_secret="w-secret") as client:
        with pytest.raises(PermissionDenied) as err:
            client.check_connection()
    assert "field.get" in str(err.value) and "'writer'" in str(err.value) and "403" in str(err.value)
    # Nothing was retried: a 403 won't change by asking again.
    assert [r["status"] for r in emu.requests_log() if r["path"].endswith("/field")] == [403]


def test_an_unreachable_server_fails_fast_as_transient():
    with socket.socket() as sock:       # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = EmarsysSettings(api_url=f"http://127.0.0.1:{port}", scheme="wsse", username="u", secret="s")
    with EmarsysClient(settings, limiter=RateLimiter(0)) as client:
        with pytest.raises(TransientError, match=f"cannot reach Emarsys at http://127.0.0.1:{port}/api/v2"):
            client.check_connection()
        assert client.requests_sent == 3


def test_an_api_url_without_http_is_a_configuration_error():
    settings = EmarsysSettings(api_url="ftp://api.example", scheme="wsse", username="u", secret="s")
    with EmarsysClient(settings, limiter=RateLimiter(0)) as client, pytest.raises(EmarsysConfigError):
        client.check_connection()
