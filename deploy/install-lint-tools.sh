#!/usr/bin/env bash
# Install the tools that tests/test_deploy.py runs: the Python ones from PyPI into the current
# Python environment, and promtool from Debian's prometheus package.
#
# promtool is unpacked from the .deb rather than installed with apt-get, because installing the
# package would also set up and start a Prometheus server. Needs apt-get and dpkg-deb (Debian or
# Ubuntu); elsewhere install promtool by other means and put it on PATH.
#
# Usage: bash deploy/install-lint-tools.sh [PREFIX]   (default PREFIX: /usr/local)
# promtool ends up in PREFIX/bin; running it twice does nothing more. The Python packages go
# into the environment of $PYTHON (default: the first python on PATH).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix="${1:-/usr/local}"

"${PYTHON:-python}" -m pip install --quiet -r "$here/requirements-lint.txt"

if command -v promtool >/dev/null 2>&1 || [ -x "$prefix/bin/promtool" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    echo "install-lint-tools: apt-get or dpkg-deb not found; install promtool yourself" >&2
    exit 1
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
(cd "$workdir" && apt-get download prometheus >/dev/null 2>&1) || {
    apt-get update >/dev/null
    (cd "$workdir" && apt-get download prometheus >/dev/null)
}
dpkg-deb -x "$workdir"/prometheus_*.deb "$workdir/root"
install -D -m 0755 "$workdir/root/usr/bin/promtool" "$prefix/bin/promtool"
echo "install-lint-tools: installed $("$prefix/bin/promtool" --version 2>&1 | head -n 1)"
