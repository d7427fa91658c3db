"""The stand-in's control routes (stats and faults), its runner, and the ``simulate`` command."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from email.utils import formatdate

import aiohttp
import pytest

from proxy.standin import DEMO_CLIENT_ID, insights_url, revoke_url, start_standin, stats_url, token_url
from proxy.standin.command import add_simulate_arguments

from .conftest import (
    INSIGHTS_PATH,
    SAMPLE_QUERY,
    FakeClock,
    basic_auth,
    query_insights,
    request_token,
    state_of,
)

STATS_KEYS = {
    "token_requests",
    "token_errors",
    "tokens_issued",
    "tokens_reused",
    "revoke_requests",
    "revocations",
    "reissue_revocations",
    "insights_requests",
    "insights_rejected",
    "insights_faults_injected",
    "expired_tokens_presented",
    "revoked_tokens_presented",
    "active_tokens",
}
CASE_C = (
    b'{"error_message":"Invalid Credentials","code":"900901",'
    b'"error_description":"Invalid Credentials. Make sure you have provided the correct security credentials"}'
)


async def _set_faults(client, faults: dict) -> dict:
    response = await client.post("/_standin/faults", json=faults)
    assert response.status == 200, await response.text()
    return await response.json()


async def _post_token(client, **kwargs):
    return await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, headers={"Authorization": basic_auth()}, **kwargs
    )


async def test_stats_start_at_zero(standin):
    """GET /_standin/stats lists every counter, all zero on a fresh stand-in."""
    response = await standin.get("/_standin/stats")
    stats = await response.json()

    assert response.status == 200
    assert set(stats) == STATS_KEYS
    assert all(value == 0 for value in stats.values())


async def test_stats_count_token_and_insights_traffic(standin):
    """The counters follow token requests, errors, revocations and Insights responses."""
    token = (await request_token(standin))["access_token"]
    await standin.post("/oauth2/token", data={"grant_type": "client_credentials"})
    await query_insights(standin, token)
    await standin.post("/oauth2/revoke", data={"token": token}, headers={"Authorization": basic_auth()})
    await query_insights(standin, token)

    stats = await (await standin.get("/_standin/stats")).json()

    assert stats["token_requests"] == 2
    assert stats["token_errors"] == 1
    assert stats["tokens_issued"] == 1
    assert stats["revoke_requests"] == 1
    assert stats["revocations"] == 1
    assert stats["insights_requests"] == 2
    assert stats["insights_rejected"] == 1
    assert stats["revoked_tokens_presented"] == 1
    assert stats["active_tokens"] == 0


async def test_stats_active_tokens_drop_at_expiry(standin, clock: FakeClock):
    """active_tokens counts tokens neither expired nor revoked, on the injected clock."""
    await request_token(standin)
    before = (await (await standin.get("/_standin/stats")).json())["active_tokens"]

    clock.advance(900)
    after = (await (await standin.get("/_standin/stats")).json())["active_tokens"]

    assert before == 1
    assert after == 0


async def test_stats_reset_zeroes_counters(standin):
    """POST /_standin/stats/reset zeroes the counters but keeps active_tokens, which is not a counter."""
    await request_token(standin)

    response = await standin.post("/_standin/stats/reset")
    stats = await response.json()

    assert response.status == 200
    assert stats["token_requests"] == 0
    assert stats["tokens_issued"] == 0
    assert stats["active_tokens"] == 1


async def test_faults_get_returns_defaults(standin):
    """GET /_standin/faults shows the start-up values."""
    faults = await (await standin.get("/_standin/faults")).json()

    assert faults == {
        "token_endpoint": "up",
        "token_latency_ms": 0.0,
        "insights_latency_ms": 0.0,
        "insights_fail_next": {"count": 0, "status": 503, "retry_after_s": 60},
        "revocation_delay_s": 0.0,
        "token_lifetime_s": 900,
        "reissue": "revoke_previous",
        "subscribed": True,
        "required_scope": None,
    }


async def test_fault_token_endpoint_down_resets_connection(standin):
    """token_endpoint "down" resets the connection without a response and counts a token error."""
    await _set_faults(standin, {"token_endpoint": "down"})

    with pytest.raises(aiohttp.ClientConnectionError):
        await _post_token(standin)

    assert state_of(standin).stats.token_errors == 1


async def test_fault_token_endpoint_down_also_stops_revoke(standin):
    """The revoke endpoint shares the STS host, so "down" resets its connections too."""
    await _set_faults(standin, {"token_endpoint": "down"})

    with pytest.raises(aiohttp.ClientConnectionError):
        await standin.post("/oauth2/revoke", data={"token": "x"}, headers={"Authorization": basic_auth()})


async def test_fault_token_endpoint_error_returns_server_error(standin):
    """token_endpoint "error" returns 500 with WSO2's server_error body."""
    await _set_faults(standin, {"token_endpoint": "error"})

    response = await _post_token(standin)

    assert response.status == 500
    assert response.headers["Content-Type"] == "application/json"
    assert await response.read() == b'{"error_description":"Internal Server Error.","error":"server_error"}'
    assert state_of(standin).stats.token_errors == 1


async def test_fault_token_endpoint_slow_uses_token_latency(standin):
    """token_endpoint "slow" with token_latency_ms delays the response by that much, then responds normally."""
    await _set_faults(standin, {"token_endpoint": "slow", "token_latency_ms": 300})

    started = time.monotonic()
    response = await _post_token(standin)
    elapsed = time.monotonic() - started

    assert response.status == 200
    assert elapsed >= 0.3


async def test_fault_token_endpoint_slow_outlasts_client_timeout(standin):
    """token_endpoint "slow" alone delays the response past a short client timeout, and shutdown still ends promptly."""
    await _set_faults(standin, {"token_endpoint": "slow"})

    with pytest.raises(asyncio.TimeoutError):
        await _post_token(standin, timeout=aiohttp.ClientTimeout(total=0.3))


async def test_fault_token_latency_delays_answer(standin):
    """token_latency_ms with the endpoint up delays every token response."""
    await _set_faults(standin, {"token_latency_ms": 200})

    started = time.monotonic()
    response = await _post_token(standin)

    assert response.status == 200
    assert time.monotonic() - started >= 0.2


async def test_fault_insights_latency_delays_answer(standin):
    """insights_latency_ms delays every Insights response."""
    await _set_faults(standin, {"insights_latency_ms": 200})

    started = time.monotonic()
    response = await query_insights(standin, None)

    assert response.status == 401
    assert time.monotonic() - started >= 0.2


async def test_fault_insights_fail_next_401_uses_case_c(standin):
    """An injected 401 is case C with the Bearer challenge, even for a valid token, and then runs out."""
    token = (await request_token(standin))["access_token"]
    await _set_faults(standin, {"insights_fail_next": {"count": 1, "status": 401}})

    failed = await query_insights(standin, token)
    failed_body = await failed.read()
    recovered = await query_insights(standin, token)
    stats = state_of(standin).stats

    assert failed.status == 401
    assert failed_body == CASE_C
    assert failed.headers["WWW-Authenticate"].startswith('Bearer realm="Choreo Connect"')
    assert recovered.status == 200
    assert stats.insights_faults_injected == 1
    assert stats.insights_rejected == 1


async def test_fault_insights_fail_next_429_sets_retry_after(standin, clock: FakeClock):
    """An injected 429 is the throttling body with Retry-After as an IMF-fixdate and no challenge."""
    await _set_faults(standin, {"insights_fail_next": {"count": 1, "status": 429, "retry_after_s": 30}})

    response = await query_insights(standin, None)

    assert response.status == 429
    assert await response.read() == (
        b'{"error_message":"Message throttled out","code":"900803","error_description":"You have exceeded your quota"}'
    )
    assert response.headers["Retry-After"] == formatdate(clock.now + 30, usegmt=True)
    assert response.headers["Content-Type"] == "text/plain"
    assert "WWW-Authenticate" not in response.headers


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b'{"errors":[{"message":"Internal server error"}]}'),
        (
            502,
            b'{"code":"102509","message":"Upstream connection reset by the remote",'
            b'"description":"upstream connect error or disconnect/reset before headers. reset reason: remote reset"}',
        ),
        (
            503,
            b'{"code":"102503","message":"Upstream connection failed",'
            b'"description":"upstream connect error or disconnect/reset before headers. reset reason: connection failure"}',
        ),
        (504, b'{"code":"102504","message":"Upstream connection timeout","description":"upstream request timeout"}'),
    ],
)
async def test_fault_insights_fail_next_server_errors(standin, status, body):
    """Injected 5xx responses use the router's body style (the 500 is a GraphQL error from the backend)."""
    await _set_faults(standin, {"insights_fail_next": {"count": 2, "status": status}})

    first = await query_insights(standin, None)
    first_body = await first.read()
    second = await query_insights(standin, None)
    third = await query_insights(standin, None)

    assert first.status == status
    assert first_body == body
    assert first.headers["Content-Type"] == "application/json"
    assert second.status == status
    assert third.status == 401


async def test_fault_insights_fail_next_count_zero_cancels(standin):
    """{"count": 0} cancels pending injected failures."""
    await _set_faults(standin, {"insights_fail_next": {"count": 5, "status": 503}})
    await _set_faults(standin, {"insights_fail_next": {"count": 0}})

    response = await query_insights(standin, None)

    assert response.status == 401


async def test_fault_revocation_delay_applies_to_later_revocations(standin, clock: FakeClock):
    """revocation_delay_s set at run time delays the gateway's rejection of tokens revoked afterwards."""
    token = (await request_token(standin))["access_token"]
    await _set_faults(standin, {"revocation_delay_s": 10})
    await standin.post("/oauth2/revoke", data={"token": token}, headers={"Authorization": basic_auth()})

    during = await query_insights(standin, token)
    clock.advance(10)
    after = await query_insights(standin, token)

    assert during.status == 200
    assert after.status == 401


async def test_fault_token_lifetime_applies_to_new_tokens(standin):
    """token_lifetime_s set at run time changes expires_in of tokens issued afterwards."""
    await _set_faults(standin, {"token_lifetime_s": 5})

    body = await request_token(standin)

    assert body["expires_in"] == 5


async def test_fault_reissue_switches_mode(standin):
    """reissue set at run time switches to reuse mode."""
    first = (await request_token(standin))["access_token"]
    await _set_faults(standin, {"reissue": "reuse"})

    second = (await request_token(standin))["access_token"]

    assert second == first


async def test_fault_subscription_and_scope_switches(standin):
    """subscribed and required_scope set at run time produce cases E and F."""
    token = (await request_token(standin))["access_token"]

    await _set_faults(standin, {"subscribed": False})
    unsubscribed = await query_insights(standin, token)
    await _set_faults(standin, {"subscribed": True, "required_scope": "apim:api_manage"})
    unscoped = await query_insights(standin, token)

    assert unsubscribed.status == 403
    assert (await unsubscribed.json(content_type=None))["code"] == "900908"
    assert unscoped.status == 403
    assert (await unscoped.json(content_type=None))["code"] == "900910"


async def test_faults_delete_restores_start_values(make_standin):
    """DELETE /_standin/faults restores the settings the stand-in started with, not the library defaults."""
    client = await make_standin(token_lifetime_s=60, reissue="keep_previous")
    await _set_faults(
        client,
        {
            "token_endpoint": "error",
            "token_lifetime_s": 5,
            "reissue": "reuse",
            "insights_fail_next": {"count": 3, "status": 503},
        },
    )

    response = await client.delete("/_standin/faults")
    faults = await response.json()
    token_response = await _post_token(client)

    assert response.status == 200
    assert faults["token_endpoint"] == "up"
    assert faults["token_lifetime_s"] == 60
    assert faults["reissue"] == "keep_previous"
    assert faults["insights_fail_next"]["count"] == 0
    assert token_response.status == 200


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"token_endpoint": "sideways"}, 'Fault \'token_endpoint\' has the invalid value "sideways". Use one of "up", "down", "error", "slow".'),
        ({"colour": "red"}, "Unknown fault 'colour'. Use any of token_endpoint, token_latency_ms,"),
        ({"token_latency_ms": -1}, "Fault 'token_latency_ms' has the invalid value -1. Use a number of milliseconds from 0 to 600000."),
        ({"insights_latency_ms": "fast"}, "Fault 'insights_latency_ms' has the invalid value \"fast\"."),
        ({"insights_fail_next": {"count": 1, "status": 404}}, "Fault 'insights_fail_next.status' has the invalid value 404."),
        ({"insights_fail_next": {"count": -1, "status": 503}}, "Fault 'insights_fail_next.count' has the invalid value -1."),
        ({"insights_fail_next": {"count": 1}}, "Fault 'insights_fail_next.status' has the invalid value null."),
        ({"insights_fail_next": {"count": 1, "status": 503, "when": "now"}}, "Fault 'insights_fail_next' has the unknown member 'when'."),
        ({"insights_fail_next": 3}, "Fault 'insights_fail_next' has the invalid value 3."),
        ({"revocation_delay_s": -0.5}, "Fault 'revocation_delay_s' has the invalid value -0.5. Use seconds >= 0."),
        ({"token_lifetime_s": 0}, "Fault 'token_lifetime_s' has the invalid value 0. Use whole seconds >= 1."),
        ({"token_lifetime_s": 1.5}, "Fault 'token_lifetime_s' has the invalid value 1.5."),
        ({"reissue": "always"}, 'Fault \'reissue\' has the invalid value "always". Use one of "revoke_previous", "keep_previous", "reuse".'),
        ({"subscribed": "no"}, "Fault 'subscribed' has the invalid value \"no\". Use true or false."),
        ({"required_scope": 7}, "Fault 'required_scope' has the invalid value 7. Use a scope name or null."),
        (["token_endpoint"], 'The fault update must be a JSON object, not ["token_endpoint"].'),
    ],
)
async def test_faults_invalid_update_returns_400_naming_key(standin, update, message):
    """An invalid fault update gets 400 naming the key and the allowed values."""
    response = await standin.post("/_standin/faults", json=update)
    body = await response.json()

    assert response.status == 400
    assert body["error"] == "invalid_fault"
    assert body["message"].startswith(message)


async def test_faults_invalid_update_changes_nothing(standin):
    """An update with one invalid key applies none of its keys."""
    response = await standin.post("/_standin/faults", json={"token_endpoint": "down", "reissue": "sometimes"})

    faults = await (await standin.get("/_standin/faults")).json()

    assert response.status == 400
    assert faults["token_endpoint"] == "up"


async def test_faults_non_json_body_returns_400(standin):
    """A fault update that is not JSON gets 400 saying so."""
    response = await standin.post("/_standin/faults", data=b"token_endpoint=down")
    body = await response.json()

    assert response.status == 400
    assert body["message"].startswith("The fault update is not valid JSON")


async def test_start_standin_serves_on_loopback(clock: FakeClock):
    """start_standin serves a stand-in on a free loopback port whose URL helpers reach its routes."""
    from proxy.standin import StandinSettings

    runner, base = await start_standin(StandinSettings(clock=clock))
    try:
        async with aiohttp.ClientSession() as session:
            token_response = await session.post(
                token_url(base), data={"grant_type": "client_credentials"}, headers={"Authorization": basic_auth()}
            )
            token = (await token_response.json())["access_token"]
            insights_response = await session.post(insights_url(base), json=SAMPLE_QUERY)
            revoke_response = await session.post(
                revoke_url(base), data={"token": token}, headers={"Authorization": basic_auth()}
            )
            stats = await (await session.get(stats_url(base))).json()
    finally:
        await runner.cleanup()

    assert base.startswith("http://127.0.0.1:")
    assert insights_url(base) == base + INSIGHTS_PATH
    assert token_response.status == 200
    assert insights_response.status == 401
    assert revoke_response.headers["RevokedAccessToken"] == token
    assert stats["token_requests"] == 1


async def test_start_standin_port_in_use_raises_oserror(clock: FakeClock):
    """A port already taken raises OSError after releasing what was set up."""
    from proxy.standin import StandinSettings

    runner, base = await start_standin(StandinSettings(clock=clock))
    port = int(base.rsplit(":", 1)[1])
    try:
        with pytest.raises(OSError):
            await start_standin(StandinSettings(clock=clock), port=port)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "invalid port '70000': give a number from 0 to 65535"),
        (["--token-lifetime", "0"], "invalid token lifetime '0': give whole seconds >= 1"),
        (["--token-lifetime", "ten"], "invalid token lifetime 'ten'"),
        (["--reissue", "sometimes"], "invalid choice: 'sometimes'"),
        (["--client-id", "a:b"], "invalid client id 'a:b'"),
        (["--revocation-delay", "-1"], "invalid revocation delay '-1': give seconds >= 0"),
    ],
)
def test_simulate_bad_option_exits_2(capsys, argv, message):
    """A bad simulate option exits 2 with a message naming the value and the fix."""
    parser = argparse.ArgumentParser(prog="insights-proxy simulate")
    add_simulate_arguments(parser)

    with pytest.raises(SystemExit) as exited:
        parser.parse_args(argv)

    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_simulate_client_id_without_secret_exits_2(capsys):
    """--client-id without --client-secret exits 2 naming the missing option."""
    from proxy.standin.command import run_simulate

    parser = argparse.ArgumentParser(prog="insights-proxy simulate")
    add_simulate_arguments(parser)
    args = parser.parse_args(["--client-id", "abc"])

    with pytest.raises(SystemExit) as exited:
        run_simulate(args)

    assert exited.value.code == 2
    assert "--client-id needs --client-secret as well" in capsys.readouterr().err


def test_simulate_help_names_units():
    """The simulate help gives the unit of each timed option."""
    parser = argparse.ArgumentParser(prog="insights-proxy simulate")
    add_simulate_arguments(parser)

    help_text = " ".join(parser.format_help().split())

    assert "lifetime of issued access tokens in seconds" in help_text
    assert "or 0 to pick a free port" in help_text
    assert "seconds before the gateway rejects a revoked token" in help_text


_SIMULATE_SCRIPT = """
import argparse, sys
from proxy.standin.command import add_simulate_arguments, run_simulate
parser = argparse.ArgumentParser(prog="insights-proxy simulate")
add_simulate_arguments(parser)
sys.exit(run_simulate(parser.parse_args(sys.argv[1:])))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGTERM")
async def test_simulate_serves_until_sigterm():
    """simulate prints the URLs and demo credentials, serves tokens, and exits 0 on SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-c", _SIMULATE_SCRIPT, "--port", "0", "--token-lifetime", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = []
        while not lines or not lines[-1].startswith("Press Ctrl-C"):
            line = await asyncio.to_thread(process.stdout.readline)
            assert line, process.stderr.read()
            lines.append(line.rstrip("\n"))
        banner = "\n".join(lines)
        base = lines[0].rsplit(" ", 1)[1]

        async with aiohttp.ClientSession() as session:
            response = await session.post(
                token_url(base), data={"grant_type": "client_credentials"}, headers={"Authorization": basic_auth()}
            )
            body = await response.json()

        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(process.wait, 10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()

    assert f"token URL      {base}/oauth2/token" in banner
    assert f"revoke URL     {base}/oauth2/revoke" in banner
    assert f"Insights URL   {base}{INSIGHTS_PATH}" in banner
    assert f"JWKS URL       {base}/oauth2/jwks" in banner
    assert f"stats URL      {base}/_standin/stats" in banner
    assert f"client id      {DEMO_CLIENT_ID}" in banner
    assert "(the public demo secret)" in banner
    assert response.status == 200
    assert body["expires_in"] == 60
    assert exit_code == 0
