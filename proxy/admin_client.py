"""`insights-proxy admin ACTION`: call a running proxy's admin routes."""

from __future__ import annotations

import json
import sys

import aiohttp

from .config import load_settings, resolve_config_path
from .server import _url_host

ROUTES = {
    "token": ("GET", "/admin/token"),
    "revoke": ("POST", "/admin/token/revoke"),
    "refresh": ("POST", "/admin/token/refresh"),
    "purge": ("POST", "/admin/cache/purge"),
    "reload": ("POST", "/admin/reload"),
}


async def run_admin(action: str, config_path: str | None) -> int:
    settings = load_settings(resolve_config_path(config_path)).settings
    method, path = ROUTES[action]
    host = _url_host(settings.admin.host)
    url = f"http://{host}:{settings.admin.port}{path}"
    headers = {}
    token = settings.admin.token.get_secret_value()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, url, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=60)) as response:
                text = await response.text()
                status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"insights-proxy: cannot reach the admin listener at {url} "
              f"({type(exc).__name__}); is the proxy running with this configuration?",
              file=sys.stderr)
        return 1
    try:
        print(json.dumps(json.loads(text), indent=2))
    except ValueError:
        print(text)
    return 0 if 200 <= status < 300 else 1
