#!/usr/bin/env bash
# One command: install the load tools if missing, build upcache, run the
# benchmark against nginx on the same files. Arguments go to run.py
# (e.g. --large-mb 64 --small-count 200 --duration 5 for a quick run).
set -euo pipefail
cd "$(dirname "$0")/../.."
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet --bin upcache --example ttfb
exec python3 benches/load/run.py "$@"
