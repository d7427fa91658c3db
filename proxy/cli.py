"""The `insights-proxy` command: serve, demo, simulate, check, admin and hash-key.

Bad input exits 2 with a message naming the value and the fix; a failed check exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from . import __version__
from .errors import ConfigError

EXIT_USAGE = 2


def port_number(text: str) -> int:
    """argparse type: a TCP port from 0 (pick a free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}; give a number from 0 to 65535")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value}; give a number from 0 to 65535")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="insights-proxy",
        description="A token-free local gateway to the WSO2 Choreo Insights GraphQL API.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    config_help = ("configuration file (TOML); default: $INSIGHTS_PROXY_CONFIG, then "
                   "./insights-proxy.toml")

    serve = commands.add_parser("serve", help="run the proxy",
                                description="Run the proxy and its admin listener until "
                                            "SIGTERM or Ctrl-C. Secrets come from the "
                                            "configuration file, secret files or the "
                                            "environment, never from arguments.")
    serve.add_argument("--config", metavar="PATH", help=config_help)

    demo = commands.add_parser("demo", help="run the Choreo stand-in and the proxy together",
                               description="Start the Choreo stand-in and a proxy configured "
                                           "against it, on loopback, and print a curl command "
                                           "to try. Ctrl-C stops both.")
    demo.add_argument("--port", type=port_number, default=8080,
                      help="port of the proxy's GraphQL listener (default 8080; 0 picks a free port)")
    demo.add_argument("--admin-port", type=port_number, default=9901,
                      help="port of the admin listener (default 9901; 0 picks a free port)")
    demo.add_argument("--stand-in-port", type=port_number, default=0,
                      help="port of the Choreo stand-in (default 0: a free port)")

    simulate = commands.add_parser("simulate", help="run the Choreo stand-in alone",
                                   description="Run a local stand-in for Choreo's token "
                                               "server and Insights API, for demos and tests.")
    from .standin.command import add_simulate_arguments
    add_simulate_arguments(simulate)

    check = commands.add_parser("check", help="validate the configuration and try it end to end",
                                description="Validate the configuration, fetch a token and run "
                                            "listOrganizations (and listEnvironments when "
                                            "upstream.default_variables names an org) through "
                                            "the upstream. Exit 0 when all pass, 1 when a step "
                                            "fails, 2 for a bad configuration.")
    check.add_argument("--config", metavar="PATH", help=config_help)

    admin = commands.add_parser("admin", help="call the admin routes of a running proxy",
                                description="Call a running proxy's admin listener, using the "
                                            "admin address and token of its configuration.")
    admin.add_argument("action", choices=["token", "revoke", "refresh", "purge", "reload"],
                       help="token: show the token state; revoke: revoke the token and obtain a "
                            "new one; refresh: obtain a new token; purge: empty the cache; "
                            "reload: re-read the configuration")
    admin.add_argument("--config", metavar="PATH", help=config_help)

    commands.add_parser("hash-key", help="hash a client key for a [[clients]] entry",
                        description="Read a client key from standard input and print the "
                                    "key_hash value to put in a [[clients]] entry.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            from .commands import run_serve
            return run_serve(args.config)
        if args.command == "demo":
            from .commands import run_demo
            return run_demo(args.port, args.admin_port, args.stand_in_port)
        if args.command == "simulate":
            from .standin.command import run_simulate
            return run_simulate(args)
        if args.command == "check":
            from .check import run_check
            return asyncio.run(run_check(args.config))
        if args.command == "admin":
            from .admin_client import run_admin
            return asyncio.run(run_admin(args.action, args.config))
        if args.command == "hash-key":
            from .commands import run_hash_key
            return run_hash_key()
    except ConfigError as exc:
        print("insights-proxy: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE
