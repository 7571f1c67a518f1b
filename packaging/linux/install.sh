#!/bin/sh
# Installs the unpacked bundle for this user: the app's folder under ~/.local/lib/tunedesk, the menu entry
# and the icon under $XDG_DATA_HOME (default ~/.local/share), and a `tunedesk` command in ~/.local/bin.
# Run from the bundle's folder: ./install.sh   (./install.sh --uninstall removes all of it; the library,
# in ~/.local/share/tunedesk, is left alone).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
app="$HOME/.local/lib/tunedesk"
entry="$data/applications/tunedesk.desktop"
icon="$data/icons/hicolor/scalable/apps/tunedesk.svg"
if [ "${1:-}" = "--uninstall" ]; then
    rm -rf "$app" "$entry" "$icon" "$HOME/.local/bin/tunedesk"
    echo "Tunedesk removed (your library is kept)."
    exit 0
fi
if [ "$here" != "$app" ]; then
    rm -rf "$app.partial" && mkdir -p "$(dirname "$app")"
    cp -a "$here" "$app.partial" && rm -rf "$app" && mv "$app.partial" "$app"
fi
mkdir -p "$(dirname "$entry")" "$(dirname "$icon")" "$HOME/.local/bin"
cp "$app/_internal/resources/icons/tunedesk.svg" "$icon"
sed "s|@EXEC@|\"$app/tunedesk\"|" "$app/_internal/share/tunedesk/tunedesk.desktop" > "$entry"
ln -sf "$app/tunedesk" "$HOME/.local/bin/tunedesk"
command -v update-desktop-database >/dev/null && update-desktop-database "$data/applications" 2>/dev/null || true
echo "Tunedesk installed: find it in your applications menu, or run tunedesk."

# The window needs the desktop's own libraries (the bundle carries Qt, not X11's or Wayland's): name any that
# this system lacks, as the Debian/Ubuntu packages that have them (libxcb-icccm.so.4 -> libxcb-icccm4).
qt="$app/_internal/PySide6/Qt"
set -- "$qt/plugins/platforms/libqxcb.so" "$qt/lib/libQt6XcbQpa.so.6"
[ -n "${WAYLAND_DISPLAY:-}" ] && set -- "$qt/plugins/platforms/libqwayland.so" "$qt/lib/libQt6WaylandClient.so.6"
missing=$(ldd "$@" 2>/dev/null | sed -n 's/^[[:space:]]*\(lib[^ ]*\)\.so\.\([0-9]*\) => not found.*/\1 \2/p' |
    awk '{ print ($1 ~ /[0-9]$/) ? $1 "-" $2 : $1 $2 }' | sort -u | tr '\n' ' ' | sed 's/ $//')
if [ -n "$missing" ]; then
    echo "Before it can open its window, install these system libraries: $missing"
    echo "  (Debian/Ubuntu: sudo apt install $missing)"
fi
