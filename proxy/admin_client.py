"""`insights-proxy admin ACTION`: call a running proxy's admin routes."""

from __future__ import annotations

import json
import sys

import aiohttp

from .config import load_admin_settings, resolve_config_path
from .server import _url_host

ROUTES = {
    "token": ("GET", "/admin/token"),
    "revoke": ("POST", "/admin/token/revoke"),
    "refresh": ("POST", "/admin/token/refresh"),
    "purge": ("POST", "/admin/cache/purge"),
    "reload": ("POST", "/admin/reload"),
}


async def run_admin(action: str, config_path: str | None) -> int:
    admin = load_admin_settings(resolve_config_path(config_path))
    method, path = ROUTES[action]
    host = _url_host(admin.host)
    url = f"http://{host}:{admin.port}{path}"
    headers = {}
    token = admin.token.get_secret_value()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, url, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=120)) as response:
                text = await response.text()
                status = response.status
    except TimeoutError:
        print(f"insights-proxy: the admin listener at {url} did not respond within 120 s; "
              "check the proxy's log", file=sys.stderr)
        return 1
    except aiohttp.ClientError as exc:
        print(f"insights-proxy: cannot reach the admin listener at {url} "
              f"({type(exc).__name__}); is the proxy running with this configuration?",
              file=sys.stderr)
        return 1
    try:
        print(json.dumps(json.loads(text), indent=2))
    except ValueError:
        print(text)
    return 0 if 200 <= status < 300 else 1
