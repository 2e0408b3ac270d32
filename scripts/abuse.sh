#!/usr/bin/env bash
# Abuse cases against a real server on loopback (issue 23): unfinished
# heads (anonymous RSS), an admin lockout by silent sockets, clients that
# never read, and a wrong body over HTTP/1.0. Figures: benches/README.md.
# Usage: scripts/abuse.sh [heads|lockout|readers|wrong ...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin upcache
exec python3 scripts/abuse.py target/release/upcache "$@"
