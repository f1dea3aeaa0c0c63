#!/usr/bin/env bash
# Install Alertmanager and amtool 0.28.1, the version of the compose and k8s image
# (prom/alertmanager:v0.28.1), as DEST_DIR/alertmanager and DEST_DIR/amtool (default .venv/bin).
#
# Debian bookworm's prometheus-alertmanager is 0.25, which knows neither `url_file` (webhook) nor
# `bot_token_file` (Telegram), so its amtool refuses our config. Debian trixie packages 0.28.1: its
# .deb is fetched with apt-get from a private apt state (the system's sources are not touched),
# pinned by sha256, and unpacked; its binaries need only libc6 >= 2.34 (bookworm has 2.36).
# Re-running with the right binaries in place does nothing.
set -euo pipefail

VERSION="0.28.1"
DEB_VERSION="0.28.1+ds-1"
DEB_SHA256="76ee08c2bf686fa32ca243d099b6bfc6cb00074e9337c18ef73154b60c5830a9"

cd "$(dirname "$0")/../.."
DEST_DIR="${1:-.venv/bin}"

installed() {
    [ -x "$DEST_DIR/amtool" ] && [ -x "$DEST_DIR/alertmanager" ] \
        && "$DEST_DIR/amtool" --version 2>&1 | grep -q "version $VERSION" \
        && "$DEST_DIR/alertmanager" --version 2>&1 | grep -q "version $VERSION"
}
if installed; then
    echo "alertmanager and amtool $VERSION already in $DEST_DIR"
    exit 0
fi
if [ "$(dpkg --print-architecture)" != "amd64" ]; then
    echo "install-alertmanager: the pinned package is amd64; this machine is $(dpkg --print-architecture)" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
echo "deb http://deb.debian.org/debian trixie main" >"$work/sources.list"
apt_options=(
    -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root
)
apt-get "${apt_options[@]}" -qq update
(cd "$work" && apt-get "${apt_options[@]}" -qq download "prometheus-alertmanager=$DEB_VERSION")
deb="$work/prometheus-alertmanager_${DEB_VERSION}_amd64.deb"
echo "$DEB_SHA256  $deb" | sha256sum --check --quiet
dpkg-deb -x "$deb" "$work/root"
mkdir -p "$DEST_DIR"
install -m 0755 "$work/root/usr/bin/amtool" "$DEST_DIR/amtool"
install -m 0755 "$work/root/usr/bin/prometheus-alertmanager" "$DEST_DIR/alertmanager"
if ! installed; then
    echo "install-alertmanager: the installed binaries do not say version $VERSION" >&2
    exit 1
fi
echo "installed alertmanager and amtool $VERSION in $DEST_DIR"
