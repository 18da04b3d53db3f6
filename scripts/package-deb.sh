#!/usr/bin/env bash
# Builds the Debian package: target/debian/beatd_VERSION_ARCH.deb.
#   scripts/package-deb.sh          (needs cargo-deb: `cargo install cargo-deb --locked`)
# The release binary writes the generated assets (completions, man pages) into target/package,
# beside the unit and the config as a package installs them: the binary in /usr/bin, the state
# in /var/lib/beatd, the schema in /usr/share/beatd.
set -euo pipefail
cd "$(dirname "$0")/.."
# The package strips debug information: build without it (a third faster).
CARGO_PROFILE_RELEASE_DEBUG=false cargo build --release --locked
bin=target/release/beatd
out=target/package
rm -rf "$out"
mkdir -p "$out/completions" "$out/man"
sed 's|^ExecStart=/usr/local/bin/beatd |ExecStart=/usr/bin/beatd |' systemd/beatd.service > "$out/beatd.service"
grep -q '^ExecStart=/usr/bin/beatd ' "$out/beatd.service"
sed -e 's|^#:schema .*|#:schema /usr/share/beatd/beatd.schema.json|' \
    -e 's|^state_dir = "state".*|state_dir = "/var/lib/beatd"      # the unit'"'"'s StateDirectory|' \
    -e 's|^path = "var/uploads"|path = "/var/lib/beatd/uploads"|' \
    -e 's|^output_dir = "var/reports"|output_dir = "/var/lib/beatd/reports"|' \
    config/beatd.toml > "$out/beatd.toml"
grep -q '^state_dir = "/var/lib/beatd"' "$out/beatd.toml"
"$bin" check "$out/beatd.toml" >/dev/null
"$bin" completions bash > "$out/completions/beatd"
"$bin" completions zsh > "$out/completions/_beatd"
"$bin" completions fish > "$out/completions/beatd.fish"
"$bin" man "$out/man" >/dev/null
gzip -9n "$out"/man/*
cargo deb --no-build --strip
