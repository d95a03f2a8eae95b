"""Authentication, API users and permissions (emarsys-api.md §1, §9)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from tests.emulator.conftest import Api, data, fetch_token, reply, wsse_header


def token_request(http, client_id, client_secret, **form):
    return http.post("/oauth2/token", auth=(client_id, client_secret),
                     data={"grant_type": "client_credentials", **form})


def test_token_endpoint_uses_basic_auth_and_a_form_body(emu, http):
    """§1.3: POST /oauth2/token, Basic auth, grant_type=client_credentials -> access_token,
    token_type, expires_in (standard OAuth JSON, not the envelope)."""
    config = emu.emulator.config
    body = token_request(http, config.client_id, config.client_secret).json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600


def test_token_endpoint_refuses_bad_credentials_and_grants(emu, http):
    """§1.3: wrong client credentials -> 401 invalid_client; another grant -> 400."""
    config = emu.emulator.config
    assert token_request(http, config.client_id, "wrong").status_code == 401
    assert token_request(http, config.username, config.secret).status_code == 401   # a WSSE user
    response = http.post("/oauth2/token", auth=(config.client_id, config.client_secret),
                         data={"grant_type": "password"})
    assert response.status_code == 400 and response.json() == {"error": "unsupported_grant_type"}


def test_an_invalid_bearer_token_is_401_replycode_1(http, emu):
    """§1.3 / §9: an invalid token on v3 -> 401 replyCode 1."""
    assert reply(http.get("/api/v3/field", headers={"Authorization": "Bearer nope"})) == (401, 1)
    assert reply(http.get("/api/v3/field")) == (401, 1)


def test_wsse_digest_as_documented_with_any_key_order_and_case(emu, http):
    """§1.2: digest = base64(hex(sha1(nonce + created + secret))); Created before a lowercase
    nonce= (the official Postman script) is accepted; +00:00 and milliseconds too."""
    config = emu.emulator.config
    nonce = secrets.token_hex(16)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    digest = base64.b64encode(hashlib.sha1((nonce + created + config.secret).encode()).hexdigest().encode()).decode()
    assert len(digest) == 56 and digest.endswith("==")
    header = (f'UsernameToken Created="{created}", Username="{config.username}", '
              f'PasswordDigest="{digest}", nonce="{nonce}"')
    assert http.get("/api/v2/field", headers={"X-WSSE": header}).status_code == 200
    assert http.get("/api/v2/field", headers={"X-WSSE": wsse_header(config.username, config.secret)}).status_code == 200


def test_wsse_wrong_secret_or_user_is_401_credentials_invalid(emu, http):
    """§1.2: wrong or missing credentials -> 401 replyCode 1."""
    config = emu.emulator.config
    for header in (wsse_header(config.username, "wrong"), wsse_header("nobody", config.secret)):
        response = http.get("/api/v2/field", headers={"X-WSSE": header})
        assert reply(response) == (401, 1) and response.json()["replyText"] == "Credentials are invalid"


def test_wsse_created_outside_five_minutes_is_time_frame_invalid(emu, http):
    """§1.2: |now - Created| > 300 s -> 401 "Unauthorized Time frame is invalid"."""
    config = emu.emulator.config
    for minutes in (-6, 6):
        created = (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")
        response = http.get("/api/v2/field", headers={"X-WSSE": wsse_header(config.username, config.secret, created)})
        assert reply(response) == (401, 1)
        assert response.json()["replyText"] == "Unauthorized Time frame is invalid"
    created = (datetime.now(UTC) + timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert http.get("/api/v2/field", headers={"X-WSSE": wsse_header(config.username, config.secret, created)}
                    ).status_code == 200


def test_a_reused_wsse_nonce_is_rejected_unless_switched(emu, http, control):
    """§1.2 / §9: a reused nonce is rejected (an open question; the hostile default)."""
    config = emu.emulator.config
    header = wsse_header(config.username, config.secret)
    assert http.get("/api/v2/field", headers={"X-WSSE": header}).status_code == 200
    assert reply(http.get("/api/v2/field", headers={"X-WSSE": header})) == (401, 1)
    control.settings(reject_reused_nonce=False)
    header = wsse_header(config.username, config.secret)
    assert http.get("/api/v2/field", headers={"X-WSSE": header}).status_code == 200
    assert http.get("/api/v2/field", headers={"X-WSSE": header}).status_code == 200


def test_bearer_on_v2_and_wsse_on_v3_are_401_unless_switched(emu, http, control):
    """§1.3 / §9 / §10.1: v3 takes bearer tokens only, v2 WSSE only (cross_scheme_auth off)."""
    config = emu.emulator.config
    bearer = {"Authorization": f"Bearer {fetch_token(http, config.client_id, config.client_secret)}"}
    assert reply(http.get("/api/v2/field", headers=bearer)) == (401, 1)
    assert reply(http.get("/api/v3/field", headers={"X-WSSE": wsse_header(config.username, config.secret)})) == (401, 1)
    control.settings(cross_scheme_auth=True)
    assert http.get("/api/v2/field", headers=bearer).status_code == 200
    assert http.get("/api/v3/field", headers={"X-WSSE": wsse_header(config.username, config.secret)}).status_code == 200


def test_a_missing_permission_is_a_bare_403_forbidden(emu, http, control):
    """§1.4 / §9: a missing endpoint permission -> HTTP 403 "Forbidden" (by default not JSON)."""
    control.seed(users=[{"name": "fields-only", "secret": "pw", "scheme": "oauth", "permissions": ["field.get"]}])
    user = Api(http, "oauth", "fields-only", "pw")
    assert user.get("/field").status_code == 200
    response = user.upsert([{"3": "a@x.com"}])
    assert response.status_code == 403 and response.text == "Forbidden"
    control.settings(forbidden_body="envelope")
    assert reply(user.post("/contactlist", {"name": "L"})) == (403, 1)


def test_upsert_with_create_needs_contact_create_too(emu, http, control):
    """§1.4 / §8: PUT needs contact.update, and contact.create to create contacts."""
    control.seed(users=[{"name": "updater", "secret": "pw", "scheme": "wsse",
                         "permissions": ["contact.update"]}], contacts=[{"3": "a@x.com"}])
    user = Api(http, "wsse", "updater", "pw")
    assert data(user.upsert([{"3": "a@x.com", "1": "A"}], create=False))["errors"] == []
    assert user.upsert([{"3": "a@x.com"}], create=True).status_code == 403


def test_each_api_user_has_its_own_credentials_and_scheme(emu, http, control):
    """§1.4: several API users, each with its own credentials; tokens belong to OAuth users."""
    control.seed(users=[{"name": "second-oauth", "secret": "pw2", "scheme": "oauth"},
                        {"name": "second001", "secret": "pw3", "scheme": "wsse"}])
    assert Api(http, "oauth", "second-oauth", "pw2").get("/field").status_code == 200
    assert Api(http, "wsse", "second001", "pw3").get("/field").status_code == 200
    assert reply(Api(http, "wsse", "second001", "pw2").get("/field")) == (401, 1)


def test_requests_log_names_the_api_user(emu, http, control):
    """Contracts item 1: the request log carries the API user of each request."""
    control.seed(users=[{"name": "logged", "secret": "pw", "scheme": "oauth"}])
    Api(http, "oauth", "logged", "pw").get("/field")
    assert control.get("/requests")[-1]["user"] == "logged"


def test_unknown_api_path_and_version(http, emu, v3):
    """§2.1: the envelope everywhere: an unknown resource 404 after authentication."""
    assert reply(v3.get("/no/such/thing")) == (404, 1)
    assert http.get("/api/v9/field").status_code == 404
    assert isinstance(http.get("/api/v9/field").json(), dict)
