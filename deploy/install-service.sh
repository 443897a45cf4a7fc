#!/usr/bin/env bash
# Install powerwall-influx as a systemd service running from this checkout.
#   sudo deploy/install-service.sh [USER]
# Sets up .venv if needed, checks the configuration and the gateway with one poll
# (PW_INSTALLER_SKIP_TEST=1 skips the poll, e.g. when the gateway is offline), then installs,
# enables and starts the unit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
user=${1:-${SUDO_USER:-$(id -un)}}
unit=/etc/systemd/system/powerwall-influx.service

[ "$(id -u)" -eq 0 ] || { echo "install-service: run as root (sudo)" >&2; exit 1; }
[ -f "$repo/.env" ] || { echo "install-service: create $repo/.env first (see .env.example)" >&2; exit 1; }
if [ ! -x "$repo/.venv/bin/python" ]; then
    sudo -u "$user" python3 -m venv "$repo/.venv"
    sudo -u "$user" "$repo/.venv/bin/pip" install -q -e "$repo"
fi
sudo -u "$user" "$repo/.venv/bin/python" -m powerwall_service.cli check-config --env-file "$repo/.env" >/dev/null
if [ "${PW_INSTALLER_SKIP_TEST:-0}" != "1" ]; then
    (cd "$repo" && sudo -u "$user" .venv/bin/python -m powerwall_service.cli poll --no-push --env-file .env >/dev/null)
fi
sed -e "s|@REPO@|$repo|g" -e "s|@USER@|$user|g" "$repo/deploy/powerwall-influx.service" > "$unit"
systemctl daemon-reload
systemctl enable --now powerwall-influx
systemctl --no-pager status powerwall-influx | head -n 5
