"""Both auth schemes against the emulator: the OAuth token's cache, refresh and single flight; WSSE's
fresh nonce per request and per retry and its clock-skew correction; secrets kept out of everything."""

from __future__ import annotations

import base64
import logging
import re
import threading

import httpx
import pytest

from dbt_emarsys_sync.emarsys import AuthError, EmarsysSettings, PermissionDenied, TransientError
from dbt_emarsys_sync.emarsys.auth import OAuthClientCredentials, WsseAuth, wsse_digest
from dbt_emarsys_sync.emarsys.client import decide, RetryPolicy

from tests.unit.emarsys.support import FakeClock, messages


def api_calls(emu, path: str = "/field") -> list[dict]:
    return [r for r in emu.requests_log() if r["path"].endswith(path)]


def token_calls(emu) -> list[dict]:
    return [r for r in emu.requests_log() if r["path"] == "/oauth2/token"]


# -- OAuth ---------------------------------------------------------------------------------------

def test_one_token_serves_many_requests(emu):
    with emu.client("oauth") as client:
        for _ in range(5):
            client.get_fields()
        assert client._auth.tokens_fetched == 1
    assert len(token_calls(emu)) == 1


def test_the_token_is_refreshed_before_it_expires_not_after(emu):
    emu.settings(token_ttl=600)
    clock = FakeClock()
    with emu.client("oauth") as client:
        client._auth._clock = clock.monotonic        # the token's lifetime runs on a fake clock
        client.get_fields()
        clock.now += 600 - 59                        # inside the last minute of its life
        client.get_fields()
        assert client._auth.tokens_fetched == 2
    assert [r["status"] for r in api_calls(emu)] == [200, 200]   # never sent an expired token


def test_a_short_lived_token_is_refreshed_halfway_not_on_every_request(emu):
    emu.settings(token_ttl=10)
    clock = FakeClock()
    with emu.client("oauth") as client:
        client._auth._clock = clock.monotonic
        client.get_fields()
        clock.now += 4
        client.get_fields()
        assert client._auth.tokens_fetched == 1
        clock.now += 2
        client.get_fields()
        assert client._auth.tokens_fetched == 2


def test_a_revoked_token_is_refreshed_once_on_401(emu):
    with emu.client("oauth") as client:
        client.get_fields()
        emu.post("/_emulator/tokens/expire")
        assert client.get_fields()
        assert client._auth.tokens_fetched == 2
    assert [r["status"] for r in api_calls(emu)] == [200, 401, 200]


def test_concurrent_401s_share_one_refresh(emu):
    with emu.client("oauth") as client:
        client.get_fields()
        emu.post("/_emulator/tokens/expire")
        barrier = threading.Barrier(6)
        errors: list[Exception] = []

        def work():
            barrier.wait()
            try:
                client.get_fields()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert client._auth.tokens_fetched == 2


def test_wrong_client_secret_is_credentials_rejected_without_the_secret(emu):
    with emu.client("oauth", client_secret="not-the-secret-xyz") as client, pytest.raises(AuthError) as err:
        client.get_fields()
    text = str(err.value)
    assert text.startswith("credentials rejected") and "EMARSYS_CLIENT_SECRET" in text
    assert "not-the-secret-xyz" not in text


def test_a_token_endpoint_that_is_down_is_retried(emu):
    emu.fault(type="status", status=503, path="/oauth2/token", count=2)
    with emu.client("oauth") as client:
        assert client.get_fields()
        assert client.retries == 2


def test_a_token_endpoint_that_stays_down_is_transient_not_an_auth_error(emu):
    emu.fault(type="status", status=503, path="/oauth2/token", count=50)
    with emu.client("oauth") as client, pytest.raises(TransientError, match="token endpoint"):
        client.get_fields()


# -- WSSE ----------------------------------------------------------------------------------------

def wsse_parts(request: httpx.Request) -> dict[str, str]:
    header = request.headers["x-wsse"]
    assert header.startswith("UsernameToken ")
    return dict(part.strip().split("=", 1) for part in header[len("UsernameToken "):].split(","))


def test_wsse_signs_every_request_and_every_retry_afresh(emu):
    recorder = emu.recording_transport()
    emu.fault(type="status", status=503, path="/field", count=2)
    with emu.client("wsse", transport=recorder) as client:
        client.get_fields()
        client.get_fields()
    parts = [wsse_parts(r) for r in recorder.requests]
    assert len(parts) == 4                                   # two 503s, their retry, one more call
    assert len({p["Nonce"] for p in parts}) == 4
    for p in parts:
        nonce, created, digest = (p[k].strip('"') for k in ("Nonce", "Created", "PasswordDigest"))
        assert len(nonce) == 32 and int(nonce, 16) >= 0
        assert digest == wsse_digest(nonce, created, emu.config.secret)
        assert len(digest) == 56 and digest.endswith("==")
        assert base64.b64decode(digest).decode() == base64.b64decode(digest).decode().lower()


@pytest.mark.parametrize("skew", [900, -900])
def test_wsse_clock_skew_is_corrected_from_the_date_header_and_said(emu, caplog, skew):
    emu.settings(clock_skew=skew)
    caplog.set_level(logging.INFO)
    with emu.client("wsse") as client:
        assert client.get_fields()
        assert abs(client._auth.clock_offset - skew) < 5
        client.get_fields()
    statuses = [r["status"] for r in api_calls(emu)]
    assert statuses == [401, 200, 200]        # one refusal, then signed with the server's time
    warning = next(m for m in messages(caplog, logging.WARNING) if "clock" in m)
    said = re.search(r"clock is (\d+)s (ahead of|behind) the Emarsys server", warning)
    assert said and abs(int(said.group(1)) - abs(skew)) <= 2 and "NTP" in warning
    assert said.group(2) == ("behind" if skew > 0 else "ahead of")


def test_wsse_skew_that_correction_cannot_fix_says_how_far_off_the_clock_is():
    # The decision on a 401 "Time frame is invalid": the message states the skew from `Date`.
    settings = EmarsysSettings(api_url="https://api.example", scheme="wsse", username="u001", secret="s3cr3t")
    server_now = 1_700_000_000
    response = httpx.Response(401, json={"replyCode": 1, "replyText": "Unauthorized Time frame is invalid",
                                         "data": ""},
                              headers={"Date": "Tue, 14 Nov 2023 22:13:20 GMT"})
    decision = decide("GET", "/field", response, attempt=1, elapsed=0, policy=RetryPolicy(),
                      settings=settings, wall_clock=lambda: server_now + 420)
    assert isinstance(decision.error, AuthError)
    text = str(decision.error)
    assert text.startswith("credentials rejected") and "420s ahead of" in text and "NTP" in text
    assert "s3cr3t" not in text


def test_wrong_wsse_secret_is_credentials_rejected(emu):
    with emu.client("wsse", secret="wrong-wsse-secret") as client, pytest.raises(AuthError) as err:
        client.get_fields()
    assert str(err.value).startswith("credentials rejected") and "EMARSYS_SECRET" in str(err.value)
    assert "wrong-wsse-secret" not in str(err.value)


# -- secrets -------------------------------------------------------------------------------------

def _exception_texts(exc: BaseException | None) -> str:
    out = []
    while exc is not None:
        out += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(out)


def test_secrets_never_reach_logs_exceptions_or_reprs(emu, caplog):
    caplog.set_level(logging.DEBUG)            # every logger, httpx and httpcore included
    seen: list[str] = []
    secrets_: list[str] = [emu.config.client_secret, emu.config.secret,
                           base64.b64encode(f"{emu.config.client_id}:{emu.config.client_secret}".encode()).decode()]
    with emu.client("oauth") as client:
        client.get_fields()
        secrets_.append(client._auth._token)
        emu.post("/_emulator/tokens/expire")
        emu.fault(type="status", status=503, path="/field")
        client.get_fields()
        secrets_.append(client._auth._token)
        seen += [repr(client), repr(client.settings), str(client.settings), repr(client._auth)]
    emu.settings(clock_skew=900)
    with emu.client("wsse") as client:
        client.get_fields()
        seen += [repr(client), repr(client.settings), repr(client._auth)]
    for scheme, bad in [("oauth", {"client_secret": "bad-secret-1"}), ("wsse", {"secret": "bad-secret-2"})]:
        secrets_.append(next(iter(bad.values())))
        with emu.client(scheme, **bad) as client:
            with pytest.raises(AuthError) as err:
                client.get_fields()
            seen.append(_exception_texts(err.value))
    emu.post("/_emulator/seed", {"users": [{"name": "no-fields", "secret": "perm-secret", "scheme": "oauth",
                                            "permissions": ["contact.update"]}]})
    secrets_.append("perm-secret")
    with emu.client("oauth", client_id="no-fields", client_secret="perm-secret") as client:
        with pytest.raises(PermissionDenied) as err:
            client.get_fields()
        seen.append(_exception_texts(err.value))
    everything = "\n".join(seen) + "\n" + caplog.text + "\n".join(
        str(r.__dict__) for r in caplog.records)
    for secret in secrets_:
        assert secret and secret not in everything
