"""Signature verification, event parsing and the run policy (pure functions, no sockets)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from dbt_emarsys_sync.cloud.errors import CloudConfigError
from dbt_emarsys_sync.cloud.settings import AdminApiSettings, RunPolicy, ServiceSettings
from dbt_emarsys_sync.cloud.webhook import Decision, MalformedDelivery, decide, parse_event, verify_signature

SECRET = "a-webhook-secret"
BODY = b'{"eventType": "job.run.completed", "accountId": 1, "data": {"runId": "5", "jobId": "7"}}'


def dbt_cloud_signature(body: bytes, secret: str = SECRET) -> str:
    """Computed independently of the code under test, as dbt Cloud's docs describe it."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_signature_is_the_hex_hmac_sha256_of_the_raw_body():
    assert verify_signature(BODY, dbt_cloud_signature(BODY), SECRET)
    assert verify_signature(BODY, dbt_cloud_signature(BODY).upper(), SECRET)
    assert verify_signature(BODY, f"  {dbt_cloud_signature(BODY)}\n", SECRET)


@pytest.mark.parametrize("header", [None, "", "0" * 64, "not hex at all", "Bearer x", "é" * 64])
def test_missing_or_wrong_signatures_fail(header):
    assert not verify_signature(BODY, header, SECRET)


def test_signature_of_another_body_or_secret_fails():
    assert not verify_signature(BODY, dbt_cloud_signature(BODY, "another-secret"), SECRET)
    # Re-serialised JSON is a different byte string: the raw body is what is signed.
    reserialised = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    assert reserialised != BODY
    assert not verify_signature(reserialised, dbt_cloud_signature(BODY), SECRET)
    assert not verify_signature(BODY, dbt_cloud_signature(BODY), "")


def test_event_ids_arrive_as_strings_and_are_read_as_numbers():
    event = parse_event(json.dumps({
        "accountId": 1, "eventId": "wev_1", "eventType": "job.run.completed",
        "data": {"jobId": "7", "runId": "12345", "environmentId": "70", "projectId": "700",
                 "runStatus": "Success", "runStatusCode": 10, "jobName": "Nightly"}}).encode())
    assert (event.account_id, event.run_id, event.job_id, event.environment_id) == (1, 12345, 7, 70)
    assert event.run_status == 10 and event.run_status_name == "Success"


def test_status_text_is_used_when_the_code_is_missing():
    event = parse_event(b'{"eventType": "job.run.completed", "data": {"runId": "1", "runStatus": "Errored"}}')
    assert event.run_status == 20


@pytest.mark.parametrize("body, reason", [
    (b"{", "not JSON"),
    (b"[]", "not a JSON object"),
    (b'{"data": {"runId": "1"}}', "no eventType"),
    (b'{"eventType": "job.run.completed", "data": {}}', "without data.runId"),
    (b'{"eventType": "job.run.completed", "data": {"runId": "12a"}}', "runId is not a number"),
    (b'{"eventType": "job.run.completed", "data": "x"}', "`data` is not an object"),
    # Past what the ledger stores (64-bit), or not an id at all.
    (b'{"eventType": "job.run.completed", "data": {"runId": "99999999999999999999999"}}', "runId is out of range"),
    (b'{"eventType": "job.run.completed", "data": {"runId": "-1"}}', "runId is out of range"),
    (b'{"eventType": "job.run.completed", "accountId": 0, "data": {"runId": "1"}}', "accountId is out of range"),
    # Nested past Python's recursion limit: a clear 400, not a server error.
    (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
])
def test_malformed_deliveries_say_why(body, reason):
    with pytest.raises(MalformedDelivery, match=reason):
        parse_event(body)


def completed(status: int = 10, job: str = "7", env: str = "70", account: int = 1,
              event_type: str = "job.run.completed"):
    return parse_event(json.dumps({"accountId": account, "eventType": event_type, "data": {
        "runId": "9", "jobId": job, "environmentId": env, "runStatusCode": status}}).encode())


def test_policy_defaults_sync_only_successful_completed_runs():
    policy = RunPolicy()
    assert decide(completed(10), policy, 1).act
    assert not decide(completed(20), policy, 1).act
    assert "DBT_CLOUD_SYNC_AFTER_FAILED_RUNS" in decide(completed(20), policy, 1).reason
    assert not decide(completed(30), policy, 1).act
    assert not decide(completed(10, event_type="job.run.started"), policy, 1).act
    assert not decide(completed(20, event_type="job.run.errored"), policy, 1).act
    assert not decide(completed(10, account=2), policy, 1).act
    unnamed = parse_event(b'{"eventType": "job.run.completed", "data": {"runId": "9", "runStatusCode": 10}}')
    assert decide(unnamed, policy, 1) == Decision(False, "the delivery names no accountId")


def test_policy_can_sync_after_failed_runs_but_never_cancelled_ones():
    policy = RunPolicy(sync_after_failed_runs=True)
    assert decide(completed(20), policy, 1).act
    assert not decide(completed(30), policy, 1).act


def test_allow_lists_of_jobs_and_environments():
    policy = RunPolicy(job_ids=frozenset({7}), environment_ids=frozenset({70}))
    assert decide(completed(job="7", env="70"), policy, 1).act
    assert "DBT_CLOUD_JOB_IDS" in decide(completed(job="8"), policy, 1).reason
    assert "DBT_CLOUD_ENVIRONMENT_IDS" in decide(completed(env="71"), policy, 1).reason


def test_settings_from_the_environment():
    env = {"DBT_CLOUD_WEBHOOK_SECRET": "s3cret-value", "DBT_CLOUD_API_TOKEN": "dbtc_token",
           "DBT_CLOUD_ACCOUNT_ID": "42", "DBT_CLOUD_URL": "https://ab123.us1.dbt.com/",
           "DBT_CLOUD_JOB_IDS": "1, 2", "DBT_CLOUD_SYNC_AFTER_FAILED_RUNS": "yes"}
    settings = ServiceSettings.from_env(env)
    assert settings.api.account_base == "https://ab123.us1.dbt.com/api/v2/accounts/42"
    assert settings.policy == RunPolicy(True, frozenset({1, 2}), frozenset())
    assert "s3cret-value" not in repr(settings) and "dbtc_token" not in repr(settings)


@pytest.mark.parametrize("env, message", [
    ({}, "DBT_CLOUD_WEBHOOK_SECRET is not set"),
    ({"DBT_CLOUD_WEBHOOK_SECRET": "  "}, "DBT_CLOUD_WEBHOOK_SECRET is not set"),
    ({"DBT_CLOUD_WEBHOOK_SECRET": "x"}, "DBT_CLOUD_ACCOUNT_ID and DBT_CLOUD_API_TOKEN are not set"),
    ({"DBT_CLOUD_WEBHOOK_SECRET": "x", "DBT_CLOUD_API_TOKEN": "t", "DBT_CLOUD_ACCOUNT_ID": "abc"},
     "DBT_CLOUD_ACCOUNT_ID must be a number"),
    ({"DBT_CLOUD_WEBHOOK_SECRET": "x", "DBT_CLOUD_API_TOKEN": "t", "DBT_CLOUD_ACCOUNT_ID": "1",
      "DBT_CLOUD_URL": "cloud.getdbt.com"}, "DBT_CLOUD_URL must be the account's access URL"),
    ({"DBT_CLOUD_WEBHOOK_SECRET": "x", "DBT_CLOUD_API_TOKEN": "t", "DBT_CLOUD_ACCOUNT_ID": "1",
      "DBT_CLOUD_URL": "https://cloud.getdbt.com/api/v2"}, "no path"),
    ({"DBT_CLOUD_WEBHOOK_SECRET": "x", "DBT_CLOUD_API_TOKEN": "t", "DBT_CLOUD_ACCOUNT_ID": "1",
      "DBT_CLOUD_JOB_IDS": "7,eight"}, "DBT_CLOUD_JOB_IDS must be a comma-separated list"),
    ({"DBT_CLOUD_WEBHOOK_SECRET": "x", "DBT_CLOUD_API_TOKEN": "t", "DBT_CLOUD_ACCOUNT_ID": "1",
      "DBT_CLOUD_SYNC_AFTER_FAILED_RUNS": "maybe"}, "must be true or false"),
])
def test_bad_settings_are_named(env, message):
    with pytest.raises(CloudConfigError, match=message):
        ServiceSettings.from_env(env)


def test_admin_api_settings_default_to_the_multi_tenant_url():
    assert AdminApiSettings.from_env({"DBT_CLOUD_API_TOKEN": "t", "DBT_CLOUD_ACCOUNT_ID": "3"}).url == \
        "https://cloud.getdbt.com"
