#!/usr/bin/env bash
# The system libraries the desktop app (Qt 6, offscreen or on a desktop) needs on Debian and Ubuntu, and any
# extra packages named as arguments (`make test` names openssh-server, whose sshd the remote-host tests start
# on 127.0.0.1: a desktop user gets no SSH server); installed with apt when missing; a machine that has them
# all is left alone. XCB: every library `ldd` names for Qt's xcb platform plugin
# (PySide6/Qt/plugins/platforms/libqxcb.so and libQt6XcbQpa), which a desktop without libxcb-icccm4 and
# libxcb-keysyms1 cannot start (Qt then blames xcb-cursor0, wrongly).
set -euo pipefail
PACKAGES=(libegl1 libgl1 libxkbcommon0 libfontconfig1 libglib2.0-0 libdbus-1-3 fonts-dejavu-core
    libx11-6 libx11-xcb1 libxcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
    libxcb-render0 libxcb-render-util0 libxcb-shape0 libxcb-shm0 libxcb-sync1 libxcb-util1 libxcb-xfixes0
    libxcb-xkb1 libxkbcommon-x11-0 tesseract-ocr tesseract-ocr-eng "$@")
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
