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
