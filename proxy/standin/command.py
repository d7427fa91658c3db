"""``insights-proxy simulate``: serve the Choreo stand-in alone until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from proxy.standin.app import faults_url, insights_url, jwks_url, revoke_url, start_standin, stats_url, token_url
from proxy.standin.settings import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, REISSUE_MODES, StandinSettings

DEFAULT_PORT = 8090


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: give a number from 0 to 65535 (0 picks a free port)")
    return port


def _client_id(text: str) -> str:
    if not text or ":" in text:
        raise argparse.ArgumentTypeError(
            f"invalid client id {text!r}: give a non-empty id without ':' "
            "(HTTP Basic authentication splits the id from the secret at the first ':')"
        )
    return text


def _client_secret(text: str) -> str:
    if not text:
        # The value is empty, so naming it reveals nothing.
        raise argparse.ArgumentTypeError("invalid client secret '': give a non-empty secret")
    return text


def _lifetime(text: str) -> int:
    try:
        seconds = int(text)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"invalid token lifetime {text!r}: give whole seconds >= 1, such as 900")
    return seconds


def _delay(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"invalid revocation delay {text!r}: give seconds >= 0, such as 2.5")
    return seconds


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``insights-proxy simulate`` to ``parser``."""
    parser.add_argument(
        "--host", default="127.0.0.1", metavar="H", help="address to listen on (default: %(default)s; another address exposes the stand-in to the network)"
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        metavar="N",
        help="TCP port to listen on, or 0 to pick a free port (default: %(default)s)",
    )
    parser.add_argument(
        "--client-id",
        type=_client_id,
        metavar="ID",
        help=(
            "consumer key the fake application accepts, given together with --client-secret "
            "(default: the public demo key)"
        ),
    )
    parser.add_argument(
        "--client-secret",
        type=_client_secret,
        metavar="SECRET",
        help=(
            "consumer secret the fake application accepts, given together with --client-id "
            "(default: the public demo secret)"
        ),
    )
    parser.add_argument(
        "--token-lifetime",
        type=_lifetime,
        default=900,
        metavar="S",
        help="lifetime of issued access tokens in seconds, sent as expires_in (default: %(default)s)",
    )
    parser.add_argument(
        "--reissue",
        choices=REISSUE_MODES,
        default="revoke_previous",
        metavar="MODE",
        help=(
            "what a new token request does to the client's active token: revoke_previous revokes it, "
            "keep_previous leaves it valid, reuse returns it again with the seconds it has left "
            "(default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--revocation-delay",
        type=_delay,
        default=0.0,
        metavar="S",
        help="seconds before the gateway rejects a revoked token (default: %(default)s)",
    )


def _settings_from(args: argparse.Namespace) -> StandinSettings:
    if (args.client_id is None) != (args.client_secret is None):
        given, missing = ("--client-id", "--client-secret") if args.client_id else ("--client-secret", "--client-id")
        message = f"insights-proxy simulate: error: {given} needs {missing} as well. Give both or neither."
        print(message, file=sys.stderr)
        raise SystemExit(2)
    return StandinSettings(
        client_id=args.client_id or DEMO_CLIENT_ID,
        client_secret=args.client_secret or DEMO_CLIENT_SECRET,
        token_lifetime_s=args.token_lifetime,
        reissue=args.reissue,
        revocation_delay_s=args.revocation_delay,
    )


def _print_banner(base: str, settings: StandinSettings) -> None:
    if settings.client_secret == DEMO_CLIENT_SECRET:
        secret_line = f"  client secret  {settings.client_secret}   (the public demo secret)"
    else:
        secret_line = "  client secret  as given with --client-secret"
    lines = [
        f"Choreo stand-in listening on {base}",
        f"  token URL      {token_url(base)}",
        f"  revoke URL     {revoke_url(base)}",
        f"  Insights URL   {insights_url(base, settings.org_prefix)}",
        f"  JWKS URL       {jwks_url(base)}",
        f"  stats URL      {stats_url(base)}",
        f"  faults URL     {faults_url(base)}",
        f"  client id      {settings.client_id}",
        secret_line,
        f"  tokens         {settings.token_lifetime_s} s lifetime, re-issue mode {settings.reissue}",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), flush=True)


async def _serve(settings: StandinSettings, host: str, port: int) -> int:
    try:
        runner, base = await start_standin(settings, host=host, port=port)
    except OSError as exc:
        print(
            f"insights-proxy simulate: error: cannot listen on {host}:{port} ({exc.strerror or exc}). "
            "Pick another --port, or 0 for a free one.",
            file=sys.stderr,
        )
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Windows event loops have no signal handlers, so there Ctrl-C arrives as KeyboardInterrupt.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        _print_banner(base, settings)
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signum)
        await runner.cleanup()
    print("Choreo stand-in stopped.", flush=True)
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    """Run the stand-in with the parsed options until Ctrl-C or SIGTERM and return the exit status."""
    settings = _settings_from(args)
    try:
        return asyncio.run(_serve(settings, args.host, args.port))
    except KeyboardInterrupt:
        return 0
