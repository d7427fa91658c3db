"""The admin listener: token control, cache purge, reload, health and access control."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from aiohttp import web

from proxy.standin.insights import FIXTURE_ORG
from proxy.standin import start_standin, StandinSettings, STANDIN_STATE

from .conftest import SAMPLE_QUERY, proxy_config, remember_secret, write_config

ADMIN_TOKEN = "admin-token-for-tests-0001"
VARIABLES = {"org": {"orgId": FIXTURE_ORG.uuid}}


def admin_config(stand_in, **sections):
    return proxy_config(stand_in, admin={"port": 0, "token": ADMIN_TOKEN}, **sections)


async def admin_call(proxy, method: str, path: str, *, token: str | None = ADMIN_TOKEN,
                     **headers: str) -> tuple[int, dict, dict]:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with proxy.session.request(method, proxy.admin_url + path,
                                     headers=headers) as response:
        text = await response.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = {"text": text}
        return response.status, body, dict(response.headers)


@pytest.fixture(autouse=True)
def admin_token_is_secret():
    remember_secret(ADMIN_TOKEN)


async def fault(stand_in, session, **faults):
    async with session.post(f"{stand_in.base}/_standin/faults", json=faults) as response:
        assert response.status == 200, await response.text()


async def test_revoke_reaches_endpoint_and_replaces_token(stand_in, start_proxy):
    """A revoke calls the revoke endpoint once; the old token is dead and never sent again."""
    proxy = await start_proxy(admin_config(stand_in, cache={"ttl_s": 0}))
    response, _ = await proxy.query(SAMPLE_QUERY, VARIABLES)
    assert response.status == 200
    old_header = stand_in.state.recorded[-1].headers["Authorization"]
    status, body, _ = await admin_call(proxy, "POST", "/admin/token/revoke")
    assert status == 200, body
    assert body["revoked"] is True
    assert body["old_fingerprint"] != body["new_fingerprint"]
    assert body["new_fingerprint"]
    assert stand_in.stats["revocations"] == 1
    async with proxy.session.post(stand_in.base + "/93tu/insights/1.0.0/query-api",
                                  json={"query": SAMPLE_QUERY, "variables": VARIABLES},
                                  headers={"Authorization": old_header}) as direct:
        assert direct.status == 401
    seen = len(stand_in.state.recorded)
    for _ in range(5):
        response, _ = await proxy.query(SAMPLE_QUERY, VARIABLES)
        assert response.status == 200
    later = list(stand_in.state.recorded)[seen:]
    assert later and all(r.headers["Authorization"] != old_header for r in later)
    assert old_header.split()[1] not in json.dumps(body)


@pytest.mark.parametrize("mode", ["revoke_previous", "keep_previous", "reuse"])
async def test_revoke_each_reissue_mode(start_stand_in, start_proxy, mode):
    """After a revoke the next token is a new one, whatever the re-issue mode."""
    stand_in = await start_stand_in(reissue=mode)
    proxy = await start_proxy(admin_config(stand_in, cache={"ttl_s": 0}))
    await proxy.query(SAMPLE_QUERY, VARIABLES)
    status, body, _ = await admin_call(proxy, "POST", "/admin/token/revoke")
    assert status == 200
    assert body["new_fingerprint"] != body["old_fingerprint"]
    response, _ = await proxy.query(SAMPLE_QUERY, VARIABLES)
    assert response.status == 200


async def test_revoke_requests_in_flight_keep_working(start_stand_in, start_proxy):
    """Requests during a revoke wait for the new token instead of failing."""
    stand_in = await start_stand_in(reissue="reuse")
    proxy = await start_proxy(admin_config(stand_in, cache={"ttl_s": 0}))
    await proxy.query(SAMPLE_QUERY, VARIABLES)
    await fault(stand_in, proxy.session, token_latency_ms=300)
    revoke = asyncio.ensure_future(admin_call(proxy, "POST", "/admin/token/revoke"))
    await asyncio.sleep(0.05)
    queries = [proxy.query(SAMPLE_QUERY, {**VARIABLES, "n": i}) for i in range(20)]
    results = await asyncio.gather(*queries)
    assert {response.status for response, _ in results} == {200}
    assert (await revoke)[0] == 200
    assert stand_in.stats["revoked_tokens_presented"] == 0


async def test_revoke_nothing_held(stand_in, start_proxy):
    """With no token held, revoke reports that there was nothing to revoke."""
    proxy = await start_proxy(admin_config(stand_in))
    await asyncio.sleep(0.1)  # the warm-up fetch
    proxy.server.holder.current.tokens._store.discard()
    status, body, _ = await admin_call(proxy, "POST", "/admin/token/revoke")
    assert status == 200
    assert body["revoked"] is False
    assert "nothing to revoke" in body["message"]


async def test_revoke_endpoint_down_502(stand_in, start_proxy):
    """An unreachable revoke endpoint gives 502 with the reason; the token is still gone."""
    raw = admin_config(stand_in)
    raw["oauth"]["revoke_url"] = "http://127.0.0.1:9/oauth2/revoke"
    proxy = await start_proxy(raw)
    await proxy.query(SAMPLE_QUERY, VARIABLES)
    old = proxy.server.holder.current.tokens.current()
    status, body, _ = await admin_call(proxy, "POST", "/admin/token/revoke")
    assert status == 502
    assert body["revocation"]["ok"] is False
    assert "unreachable" in body["revocation"]["detail"]
    assert body["old_fingerprint"] == old.fingerprint
    assert proxy.server.holder.current.tokens.current().value != old.value


async def test_revoke_endpoint_401_reported(stand_in, start_proxy, aiohttp_server):
    """A revoke endpoint responding 401 is reported as a failed revocation with its error."""
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=401, text='{"error_description":"Client Authentication '
                            'failed.","error":"invalid_client"}', content_type="text/html")

    app = web.Application()
    app.router.add_post("/oauth2/revoke", refuse)
    server = await aiohttp_server(app)
    raw = admin_config(stand_in)
    raw["oauth"]["revoke_url"] = str(server.make_url("/oauth2/revoke"))
    proxy = await start_proxy(raw)
    await proxy.query(SAMPLE_QUERY, VARIABLES)
    status, body, _ = await admin_call(proxy, "POST", "/admin/token/revoke")
    assert status == 502
    assert body["revocation"]["status"] == 401
    assert "invalid_client" in body["revocation"]["detail"]


async def test_refresh_obtains_new_token(stand_in, start_proxy):
    """POST /admin/token/refresh obtains a new token without revoking the old one."""
    proxy = await start_proxy(admin_config(stand_in))
    await proxy.query(SAMPLE_QUERY, VARIABLES)
    status, body, _ = await admin_call(proxy, "POST", "/admin/token/refresh")
    assert status == 200
    assert body["new_fingerprint"] != body["old_fingerprint"]
    assert stand_in.stats["revocations"] == 0


async def test_token_status_fields(stand_in, start_proxy):
    """GET /admin/token reports state and timing by fingerprint only."""
    proxy = await start_proxy(admin_config(stand_in))
    await proxy.query(SAMPLE_QUERY, VARIABLES)
    status, body, _ = await admin_call(proxy, "GET", "/admin/token")
    assert status == 200
    for key in ("state", "fingerprint", "expires_at", "expires_in_s", "obtained_at",
                "consecutive_failures", "last_error"):
        assert key in body
    assert body["state"] == "valid"
    assert len(body["fingerprint"]) == 12
    token = proxy.server.holder.current.tokens.current().value
    assert token not in json.dumps(body)


async def test_readyz_reports_failure_reason(start_stand_in, start_proxy):
    """/readyz is 503 with the reason while no token can be obtained, 200 once one is held."""
    stand_in = await start_stand_in()
    raw = admin_config(stand_in)
    raw["oauth"]["client_secret"] = "wrong-secret-xyz1"
    remember_secret("wrong-secret-xyz1")
    proxy = await start_proxy(raw)
    await proxy.query(SAMPLE_QUERY, VARIABLES)
    status, body, _ = await admin_call(proxy, "GET", "/readyz")
    assert status == 503
    assert "invalid_client" in body["reason"]
    good = await start_proxy(admin_config(stand_in))
    await good.query(SAMPLE_QUERY, VARIABLES)
    status, body, _ = await admin_call(good, "GET", "/readyz")
    assert status == 200


async def test_purge_empties_cache(stand_in, start_proxy):
    """POST /admin/cache/purge removes every entry and returns how many."""
    proxy = await start_proxy(admin_config(stand_in))
    await proxy.query(SAMPLE_QUERY, VARIABLES)
    await proxy.query("{ listOrganizations { id } }")
    status, body, _ = await admin_call(proxy, "POST", "/admin/cache/purge")
    assert status == 200
    assert body == {"removed": 2}
    response, _ = await proxy.query(SAMPLE_QUERY, VARIABLES)
    assert "fwd=miss" in response.headers["Cache-Status"]


ROUTES = [("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/admin/token"),
          ("POST", "/admin/token/revoke"), ("POST", "/admin/token/refresh"),
          ("POST", "/admin/cache/purge"), ("POST", "/admin/reload")]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_admin_routes_need_token(stand_in, start_proxy, method, path):
    """Every route but /healthz needs the admin bearer token when one is set."""
    proxy = await start_proxy(admin_config(stand_in))
    for token in (None, "wrong-admin-token"):
        status, body, headers = await admin_call(proxy, method, path, token=token)
        assert status == 401
        assert "WWW-Authenticate" in headers
    assert stand_in.stats["revocations"] == 0


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_admin_routes_reject_browsers(stand_in, start_proxy, method, path):
    """A foreign Origin or a Host outside the allowlist is rejected even with the token."""
    proxy = await start_proxy(admin_config(stand_in))
    status, _, _ = await admin_call(proxy, method, path, Origin="https://evil.example")
    assert status == 403
    status, _, _ = await admin_call(proxy, method, path, Host="attacker.example:9901")
    assert status == 403


async def test_admin_healthz_open_and_methods(stand_in, start_proxy):
    """/healthz needs no token; unsafe routes accept only POST; unknown paths are 404."""
    proxy = await start_proxy(admin_config(stand_in))
    status, body, _ = await admin_call(proxy, "GET", "/healthz", token=None)
    assert (status, body) == (200, {"status": "ok"})
    status, _, headers = await admin_call(proxy, "GET", "/admin/token/revoke")
    assert status == 405
    assert headers["Allow"] == "POST"
    status, _, _ = await admin_call(proxy, "GET", "/admin/nothing")
    assert status == 404


async def test_admin_without_token_on_loopback(stand_in, start_proxy):
    """With no admin token configured, loopback callers use the routes without one."""
    proxy = await start_proxy(proxy_config(stand_in))
    status, body, _ = await admin_call(proxy, "GET", "/admin/token", token=None)
    assert status == 200


async def test_reload_rotated_secret_without_failure(tmp_path, start_proxy):
    """A rotated secret is picked up by reload, without a restart and without a failed request.

    The stand-in is restarted with the new secret (which also invalidates every token it
    issued), the secret file is rewritten, and the proxy is reloaded while requests run.
    """
    first = StandinSettings(client_secret="old-secret-value-1")
    remember_secret("old-secret-value-1")
    remember_secret("new-secret-value-2")
    runner, base = await start_standin(first)
    port = int(base.rsplit(":", 1)[1])
    secret_file = tmp_path / "secret"
    secret_file.write_text("old-secret-value-1\n")
    raw = {
        "server": {"port": 0}, "admin": {"port": 0, "token": ADMIN_TOKEN},
        "cache": {"ttl_s": 0},
        "upstream": {"url": f"{base}/93tu/insights/1.0.0/query-api"},
        "oauth": {"token_url": f"{base}/oauth2/token", "revoke_url": f"{base}/oauth2/revoke",
                  "client_id": first.client_id, "client_secret_file": str(secret_file)},
    }
    proxy = await start_proxy(path=write_config(tmp_path / "proxy.toml", raw))
    before = [await proxy.query(SAMPLE_QUERY, {**VARIABLES, "n": n}) for n in range(5)]
    assert {response.status for response, _ in before} == {200}
    for token in runner.app[STANDIN_STATE].tokens._by_jti.values():
        remember_secret(token.value)
    await runner.cleanup()

    runner, _ = await start_standin(StandinSettings(client_secret="new-secret-value-2"),
                                    port=port)
    secret_file.write_text("new-secret-value-2\n")
    reload = asyncio.ensure_future(admin_call(proxy, "POST", "/admin/reload"))
    status, body, _ = await reload
    during_and_after = await asyncio.gather(
        *(proxy.query(SAMPLE_QUERY, {**VARIABLES, "m": n}) for n in range(30)))
    for token in runner.app[STANDIN_STATE].tokens._by_jti.values():
        remember_secret(token.value)
    await runner.cleanup()
    assert status == 200, body
    assert body["credential_changed"] is True
    assert {response.status for response, _ in during_and_after} == {200}


async def test_reload_broken_file_keeps_old(stand_in, tmp_path, start_proxy):
    """An invalid configuration is rejected with the reason and the old one stays in force."""
    raw = admin_config(stand_in)
    path = write_config(tmp_path / "proxy.toml", raw)
    proxy = await start_proxy(path=path)
    before = proxy.server.holder.current
    path.write_text(path.read_text() + "\n[cache]\nttl_s = 'soon'\n")
    status, body, _ = await admin_call(proxy, "POST", "/admin/reload")
    assert status == 400
    assert any("cache.ttl_s" in problem for problem in body["problems"])
    assert proxy.server.holder.current is before
    response, _ = await proxy.query(SAMPLE_QUERY, VARIABLES)
    assert response.status == 200


async def test_reload_identity_change_drops_cache(stand_in, tmp_path, start_proxy):
    """A changed credential identity drops the token and the cache; otherwise both are kept."""
    raw = admin_config(stand_in)
    path = write_config(tmp_path / "proxy.toml", raw)
    proxy = await start_proxy(path=path)
    await proxy.query(SAMPLE_QUERY, VARIABLES)
    raw["cache"] = {"max_entries": 999}
    write_config(path, raw)
    status, body, _ = await admin_call(proxy, "POST", "/admin/reload")
    assert body["credential_changed"] is False
    raw["cache"] = {}
    raw["oauth"]["extra_params"] = {"orgHandle": "acme"}
    write_config(path, raw)
    await proxy.query(SAMPLE_QUERY, VARIABLES)
    status, body, _ = await admin_call(proxy, "POST", "/admin/reload")
    assert status == 200
    assert body["identity_changed"] is True
    response, _ = await proxy.query(SAMPLE_QUERY, VARIABLES)
    assert "fwd=miss" in response.headers["Cache-Status"]


async def test_reload_refused_secret_keeps_old(stand_in, tmp_path, start_proxy):
    """A mistyped new secret is rejected by reload; the old token keeps serving."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(stand_in.settings.client_secret + "\n")
    raw = admin_config(stand_in)
    del raw["oauth"]["client_secret"]
    raw["oauth"]["client_secret_file"] = str(secret_file)
    proxy = await start_proxy(path=write_config(tmp_path / "proxy.toml", raw))
    await proxy.query(SAMPLE_QUERY, VARIABLES)
    before = proxy.server.holder.current
    secret_file.write_text("mistyped-secret-42\n")
    remember_secret("mistyped-secret-42")
    status, body, _ = await admin_call(proxy, "POST", "/admin/reload")
    assert status == 400
    assert "invalid_client" in body["problems"][0]
    assert proxy.server.holder.current is before
    response, _ = await proxy.query(SAMPLE_QUERY, {**VARIABLES, "after": 1})
    assert response.status == 200
    status, body, _ = await admin_call(proxy, "GET", "/readyz")
    assert status == 200


async def test_reload_unreadable_file_rejected(stand_in, tmp_path, start_proxy):
    """A config file that turned unreadable is rejected with a reason, not a 500."""
    path = write_config(tmp_path / "proxy.toml", admin_config(stand_in))
    proxy = await start_proxy(path=path)
    path.write_bytes(b"[server]\nx = \xff\n")
    status, body, _ = await admin_call(proxy, "POST", "/admin/reload")
    assert status == 400
    assert "not UTF-8" in body["problems"][0]


async def test_reload_body_limit_takes_effect(stand_in, tmp_path, start_proxy):
    """A reloaded server.max_body_bytes applies to the next request."""
    raw = admin_config(stand_in, server={"port": 0, "max_body_bytes": 1000})
    path = write_config(tmp_path / "proxy.toml", raw)
    proxy = await start_proxy(path=path)
    big = json.dumps({"query": SAMPLE_QUERY,
                      "variables": {**VARIABLES, "pad": "x" * 1500}}).encode()

    async def send() -> int:
        async with proxy.session.post(proxy.url, data=io.BytesIO(big),
                                      headers={"Content-Type": "application/json"}) as response:
            await response.read()
            return response.status

    assert await send() == 413
    raw["server"] = {**raw["server"], "max_body_bytes": 3000}
    write_config(path, raw)
    status, _, _ = await admin_call(proxy, "POST", "/admin/reload")
    assert status == 200
    assert await send() == 200


async def test_reload_keeps_rate_limit_budget(stand_in, tmp_path, start_proxy):
    """A reload with the same [[clients]] does not reset a client's rate limit."""
    from proxy.security import hash_client_key

    key = "r" * 32
    remember_secret(key)
    raw = admin_config(stand_in, clients=[{"name": "svc", "requests_per_minute": 2,
                                           "key_hash": hash_client_key(key)}])
    path = write_config(tmp_path / "proxy.toml", raw)
    proxy = await start_proxy(path=path)
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(2):
        response, _ = await proxy.query(SAMPLE_QUERY, VARIABLES, headers=headers)
        assert response.status == 200
    status, _, _ = await admin_call(proxy, "POST", "/admin/reload")
    assert status == 200
    response, _ = await proxy.query(SAMPLE_QUERY, VARIABLES, headers=headers)
    assert response.status == 429
