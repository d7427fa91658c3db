"""Delayed Insights upstream for the benchmark: responds to every POST with a 2 KB JSON body.

    python bench/upstream.py --port 9000 --delay-ms 50

Each POST waits `--delay-ms`, then returns the body from harness/payloads.py.
`GET /_bench/stats` returns {"calls": N}, the POSTs received so far; POST /_bench/reset zeroes it.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from harness import payloads

CALLS = web.AppKey("calls", list)


def create_app(delay_s: float) -> web.Application:
    body = payloads.response_body()
    app = web.Application()
    app[CALLS] = [0]

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        app[CALLS][0] += 1
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        return web.Response(body=body, content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"calls": app[CALLS][0]})

    async def reset(request: web.Request) -> web.Response:
        app[CALLS][0] = 0
        return web.json_response({"calls": 0})

    app.router.add_get("/_bench/stats", stats)
    app.router.add_post("/_bench/reset", reset)
    app.router.add_post("/{path:.*}", answer)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 to listen on")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="delay before each response, in milliseconds")
    args = parser.parse_args()
    if args.delay_ms < 0:
        parser.error(f"--delay-ms must be 0 or more, got {args.delay_ms}")
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    web.run_app(
        create_app(args.delay_ms / 1000),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
        loop=loop_factory() if loop_factory else None,
    )


if __name__ == "__main__":
    main()
