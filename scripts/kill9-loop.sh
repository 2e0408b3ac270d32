#!/usr/bin/env bash
# Kills the real upcache binary with SIGKILL mid-download ROUNDS times (default
# 100) and checks the store and catalog after each restart.
set -euo pipefail
cd "$(dirname "$0")/.."
UPCACHE_KILL9_ROUNDS="${1:-100}" cargo test --release --test e2e crash -- --nocapture
