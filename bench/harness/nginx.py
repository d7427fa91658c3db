"""nginx configurations: the static upstream and the two reference proxies.

Each instance runs in the foreground with one master and one worker process, its files in its
own prefix directory, and no access log, so the reference does the least work it can.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

from . import procs

BENCH_TOKEN = "bench-static-token"
UPSTREAM_PATH = "/93tu/insights/1.0.0/query-api"
STATS_PATH = "/_bench/stats"

_MAIN = """\
{user}worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    # wrk keeps its connections for the whole run; nginx would close each after 1000 requests.
    keepalive_requests 100000000;
{http}
}}
"""

_STATIC_UPSTREAM = """\
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = {stats_path} {{ stub_status; }}
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
"""

_PROXY_COMMON = """\
    upstream insights {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
    }}
{cache_path}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /query-api {{
            proxy_pass http://insights{upstream_path};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {token}";
{cache}
        }}
    }}
"""

# $request_body is only set when the body fits the in-memory buffer, hence the large buffer.
_CACHE_PATH = "    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=insights:16m max_size=256m inactive=1h use_temp_path=off;"
_CACHE = """\
            client_body_buffer_size 64k;
            proxy_cache insights;
            proxy_cache_methods POST;
            proxy_cache_key "$request_uri|$request_body";
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status always;"""


def find_nginx() -> str | None:
    """Return the nginx binary's path; Debian installs it in /usr/sbin, off a normal user's PATH."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def nginx_version(binary: str) -> str:
    output = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stderr
    match = re.search(r"nginx/(\S+)", output)
    return match.group(1) if match else output.strip()


def _render(prefix: Path, http: str) -> str:
    # As root, the workers would switch to "nobody", which cannot write the cache in a
    # root-owned prefix. The user directive is only valid when the master runs as root.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return _MAIN.format(user=user, prefix=prefix, http=http)


def static_upstream_config(prefix: Path, port: int, body: bytes) -> str:
    """Return a config that responds to every request with `body`, plus a stub_status request counter."""
    text = body.decode()
    if re.search(r"['\\$]", text):
        raise ValueError("the upstream body must not contain ', \\ or $, which nginx would interpret")
    http = _STATIC_UPSTREAM.format(port=port, stats_path=STATS_PATH, body=text)
    return _render(prefix, http)


def proxy_config(prefix: Path, port: int, upstream_port: int, *, cache: bool) -> str:
    """Return a reverse-proxy config that adds the Authorization header, with proxy_cache when `cache`."""
    http = _PROXY_COMMON.format(
        upstream_port=upstream_port,
        upstream_path=UPSTREAM_PATH,
        port=port,
        token=BENCH_TOKEN,
        cache_path=_CACHE_PATH.format(prefix=prefix) if cache else "",
        cache=_CACHE if cache else "",
    )
    return _render(prefix, http)


def start(group: procs.ProcessGroup, binary: str, name: str, prefix: Path, config: str, port: int, cpu: int | None):
    """Write `config` under `prefix`, start nginx with it and wait until `port` responds."""
    if prefix.exists():
        shutil.rmtree(prefix)
    prefix.mkdir(parents=True)
    config_path = prefix / "nginx.conf"
    config_path.write_text(config)
    check = subprocess.run([binary, "-t", "-p", str(prefix), "-c", str(config_path)], capture_output=True, text=True)
    if check.returncode != 0:
        raise procs.ProcessFailed(f"nginx rejected {config_path}:\n{check.stderr.strip()}")
    child = group.start(name, [binary, "-p", str(prefix), "-c", str(config_path)], cpu=cpu)
    procs.wait_for_http(child, f"http://127.0.0.1:{port}/")
    return child


class StubStatusCounter:
    """Count the requests an nginx instance handled, from its stub_status page.

    stub_status counts its own requests too, so the counter subtracts every status request it
    made. The difference of two readings is then exactly the requests handled in between.
    """

    def __init__(self, port: int) -> None:
        self._url = f"http://127.0.0.1:{port}{STATS_PATH}"
        self._status_requests = 0

    def calls(self) -> int:
        with urllib.request.urlopen(self._url, timeout=5) as response:
            text = response.read().decode()
        self._status_requests += 1
        # The third number of "server accepts handled requests\n A H R" is the request total.
        match = re.search(r"^\s*\d+\s+\d+\s+(\d+)\s*$", text, re.MULTILINE)
        if match is None:
            raise procs.ProcessFailed(f"unexpected stub_status output from {self._url}: {text!r}")
        return int(match.group(1)) - self._status_requests
