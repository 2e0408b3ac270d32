#!/usr/bin/env bash
# Builds upcache and shows it holding 10,000 connections when started with
# a soft open-file limit of 1024, and answering ordinary requests while
# 2,000 slow-loris connections trickle headers. Loopback only.
# Usage: scripts/connections.sh [CONNECTIONS] [SLOW_LORIS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin upcache --example conns
exec target/release/examples/conns target/release/upcache "${1:-10000}" "${2:-2000}"
