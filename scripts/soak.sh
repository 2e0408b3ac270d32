#!/usr/bin/env bash
# Mixed load, upstream faults (drops, stalls, wrong bytes) and kill -9
# restarts together for MINUTES (default 10); prints requests served,
# outcomes by kind, and wrong bytes delivered, which must be 0 (the run
# fails otherwise, or if `upcache verify` finds a bad stored file).
# Loopback only. Usage: scripts/soak.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin upcache --example soak
exec target/release/examples/soak target/release/upcache "${1:-10}"
