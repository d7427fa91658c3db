"""`insights-proxy check`: validate the configuration and try each step against the real peers."""

from __future__ import annotations

import json

import uuid
from typing import Any

from .config import Settings, load_settings, resolve_config_path
from .errors import ConfigError, ProxyError
from .forwarding import Forwarder, create_session
from .log import configure_logging
from .tokens import TokenManager

LIST_ORGANIZATIONS = "query { listOrganizations { id uuid handle name } }"
LIST_ENVIRONMENTS = "query ($org: OrgFilter!) { listEnvironments(org: $org) { id name type } }"


def _line(ok: bool, step: str, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {step:<18} {detail}", flush=True)


async def run_check(config_path: str | None) -> int:
    configure_logging("console", "warning")
    try:
        loaded = load_settings(resolve_config_path(config_path))
    except ConfigError as exc:
        _line(False, "configuration", "; ".join(exc.problems))
        return 2
    settings = loaded.settings
    _line(True, "configuration", f"{loaded.path} is valid")
    for warning in loaded.warnings:
        print(f"WARN  {'configuration':<18} {warning}")
    session = create_session(settings)
    tokens = TokenManager(settings.oauth, session)
    try:
        return await _steps(settings, session, tokens)
    finally:
        await tokens.close()
        await session.close()


async def _steps(settings: Settings, session: Any, tokens: TokenManager) -> int:
    try:
        token = await tokens.get()
    except ProxyError as exc:
        _line(False, "token", exc.message)
        return 1
    _line(True, "token", f"obtained from {settings.oauth.token_url} (fingerprint "
                         f"{token.fingerprint}, expires in {token.lifetime_s:.0f} s)")
    forwarder = Forwarder(settings, session, tokens)
    ok = await _query(forwarder, "listOrganizations", {"query": LIST_ORGANIZATIONS})
    org_id = _default_org(settings.upstream.default_variables)
    if ok and org_id is not None:
        ok = await _query(forwarder, "listEnvironments", {
            "query": LIST_ENVIRONMENTS, "variables": {"org": {"orgId": org_id}}})
    elif org_id is None:
        print(f"SKIP  {'listEnvironments':<18} upstream.default_variables names no org "
              "(set org = { orgId = \"<org UUID>\" } to check it)")
    return 0 if ok else 1


async def _query(forwarder: Forwarder, name: str, payload: dict[str, Any]) -> bool:
    body = json.dumps(payload).encode()
    try:
        answer = await forwarder.send(body, f"check-{uuid.uuid4().hex[:12]}")
    except ProxyError as exc:
        _line(False, name, f"{exc.code}: {exc.message}")
        return False
    try:
        result = json.loads(answer.body)
    except ValueError:
        result = None
    if answer.status != 200 or not isinstance(result, dict):
        _line(False, name, f"the Insights API answered HTTP {answer.status}: "
                           f"{answer.body[:200].decode(errors='replace')}")
        return False
    if result.get("errors"):
        messages = "; ".join(str(error.get("message")) for error in result["errors"][:3])
        _line(False, name, f"the Insights API returned errors: {messages}")
        return False
    rows = (result.get("data") or {}).get(name)
    count = len(rows) if isinstance(rows, list) else 0
    _line(True, name, f"{count} row(s): " + ", ".join(_row_name(row) for row in (rows or [])[:5]))
    return True


def _row_name(row: Any) -> str:
    if isinstance(row, dict):
        return str(row.get("name") or row.get("handle") or row.get("id"))
    return str(row)


def _default_org(variables: dict[str, Any]) -> str | None:
    """Find an org UUID in the default variables: `org.orgId`, `dataFilter.orgId` or `orgId`."""
    for key in ("org", "dataFilter"):
        value = variables.get(key)
        if isinstance(value, dict) and isinstance(value.get("orgId"), str):
            return value["orgId"]
    value = variables.get("orgId")
    return value if isinstance(value, str) else None


