#!/bin/bash
# Install the Debian packages veer needs to build, test and demo, if any is
# missing. Safe to run again; a no-op when everything is there.
set -euo pipefail

PKGS=(meson ninja-build pkg-config gcc libc6-dev libevent-dev libconfig-dev check libssl-dev libjansson-dev
      libc-ares-dev
      node-llhttp python3 curl socat)

missing=()
for p in "${PKGS[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
