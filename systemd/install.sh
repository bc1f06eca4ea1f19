#!/usr/bin/env bash
# Install tasd as a systemd service, from a built checkout (./dev setup):
# tasd, tasctl and tasd-run in /usr/local/bin (links into .venv), the unit,
# and /etc/tasd/tasd.toml from the example unless one exists.  DESTDIR=dir
# installs under dir instead of /.  Normally run as ./dev install-service.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${DESTDIR:-}
if [ ! -x .venv/bin/tasd ]; then
    echo "install: .venv/bin/tasd is missing: run ./dev setup first" >&2
    exit 1
fi
install -d "$root/usr/local/bin" "$root/etc/systemd/system" "$root/etc/tasd"
for prog in tasd tasctl tasd-run; do
    ln -sfn "$PWD/.venv/bin/$prog" "$root/usr/local/bin/$prog"
done
install -m 0644 systemd/tasd.service "$root/etc/systemd/system/tasd.service"
if [ ! -e "$root/etc/tasd/tasd.toml" ]; then
    install -m 0644 systemd/tasd.toml "$root/etc/tasd/tasd.toml"
fi
echo "install: $root/etc/systemd/system/tasd.service, $root/etc/tasd/tasd.toml, $root/usr/local/bin/{tasd,tasctl,tasd-run}"
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "install: set interface and address in /etc/tasd/tasd.toml, then: systemctl enable --now tasd"
elif [ -z "$root" ]; then
    echo "install: systemd is not running on this machine: the unit is installed but not loaded"
fi
