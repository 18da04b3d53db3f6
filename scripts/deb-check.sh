#!/usr/bin/env bash
# Installs the package scripts/package-deb.sh built, checks what a user of it gets, and removes
# it again, leaving nothing behind (CI runs this as root on a throwaway machine).
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls target/debian/beatd_*.deb)
dpkg -i "$deb"
trap 'dpkg --purge beatd >/dev/null 2>&1 || true' EXIT
beatd --version
beatd --version | grep -q "^beatd [0-9.]* (commit [0-9a-f]\{7,\}"
beatd check /etc/beatd/beatd.toml
man -w beatd
man -w 5 beatd.toml
unit=$(dpkg -L beatd | grep '/systemd/system/beatd.service$')
systemd-analyze verify "$unit"
test -f /usr/share/bash-completion/completions/beatd
dpkg -r beatd
test ! -e /usr/bin/beatd
test -f /etc/beatd/beatd.toml   # a removed package keeps its conffile ...
dpkg --purge beatd
test ! -e /etc/beatd/beatd.toml # ... until it is purged
! dpkg -s beatd >/dev/null 2>&1
echo "the package installs, works and goes away cleanly"
