#!/usr/bin/env bash
# Delivery Optimization side by side with lancache (nginx, slice 1m): installs
# nginx-light if missing, builds upcache and the DO client, runs do.py.
# Arguments go to do.py (e.g. --rounds 3 --mib 64 for a quicker run).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v nginx >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
fi
cargo build --release --quiet --bin upcache --example do_ranges
exec python3 benches/load/do.py "$@"
