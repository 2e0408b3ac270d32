#!/usr/bin/env bash
# Builds the Debian package: target/debian/upcache_<version>-1_<arch>.deb.
#
# The release binary writes its own completions and man pages, which the
# package installs (see [package.metadata.deb] in Cargo.toml). Needs
# cargo-deb (`cargo install cargo-deb`).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || { echo "cargo-deb is missing: cargo install cargo-deb" >&2; exit 1; }
cargo build --release --locked
assets=target/deb-assets
rm -rf "$assets" && mkdir -p "$assets/man"
bin=target/release/upcache
"$bin" completions bash > "$assets/upcache.bash"
"$bin" completions zsh > "$assets/_upcache"
"$bin" completions fish > "$assets/upcache.fish"
"$bin" man "$assets/man"
gzip -9n "$assets"/man/*.1
cargo deb --no-build --locked "$@"
