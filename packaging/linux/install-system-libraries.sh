#!/usr/bin/env bash
# The system libraries the desktop app (Qt 6, offscreen or on a desktop) needs on Debian and Ubuntu, and
# openssh-server, whose sshd the remote-host tests start on 127.0.0.1 (no service is started); installed
# with apt when missing; a machine that has them all is left alone.
set -euo pipefail
PACKAGES=(libegl1 libgl1 libxkbcommon0 libfontconfig1 libglib2.0-0 libdbus-1-3 fonts-dejavu-core openssh-server)
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
