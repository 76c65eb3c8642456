#!/usr/bin/env bash
# Remove what deploy/install.sh installed: the units, the virtual environment and PREFIX.
#
#   deploy/uninstall.sh [--prefix /opt/inspection-collector] [--unit-dir DIR] [--purge]
#
# Kept always: /var/lib/inspection-collector (the gateway's journal holds records that may
# not be in InfluxDB yet, and its hash chain continues on reinstallation; delete it by
# hand once "collector status" shows nothing unconfirmed and you have a backup), and the
# service users (collector-gateway, -recorder, -dashboard). Kept unless --purge:
# /etc/inspection-collector (configuration, user register, secrets).
# Honours DESTDIR like install.sh: under DESTDIR, systemctl is not called.
set -euo pipefail

PREFIX=/opt/inspection-collector
UNIT_DIR=
PURGE=no
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
CONF_DIR=/etc/inspection-collector
UNITS=(inspection-gateway inspection-recorder inspection-dashboard)

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=${2:?--prefix needs a value}; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --unit-dir) UNIT_DIR=${2:?--unit-dir needs a value}; shift 2 ;;
        --unit-dir=*) UNIT_DIR=${1#*=}; shift ;;
        --purge) PURGE=yes; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "uninstall.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
PREFIX=${PREFIX%/}
case "$PREFIX" in
    /?*) ;;
    *) echo "uninstall.sh: --prefix must be an absolute path other than /" >&2; exit 2 ;;
esac
if [ -z "$UNIT_DIR" ]; then
    if [ -n "$DESTDIR" ]; then UNIT_DIR=/lib/systemd/system; else UNIT_DIR=/etc/systemd/system; fi
fi
live=no
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    live=yes
fi

for unit in "${UNITS[@]}"; do
    file=$DESTDIR$UNIT_DIR/$unit.service
    [ -e "$file" ] || continue
    if [ "$live" = yes ]; then
        systemctl disable --now "$unit.service" || true
    fi
    rm -f "$file"
    echo "uninstall.sh: removed $UNIT_DIR/$unit.service" >&2
done
if [ "$live" = yes ]; then
    systemctl daemon-reload
fi
rm -f "$DESTDIR/etc/udev/rules.d/99-inspection-gauges.rules.example"
rm -rf "$DESTDIR$PREFIX"
echo "uninstall.sh: removed $PREFIX" >&2
if [ "$PURGE" = yes ]; then
    rm -rf "$DESTDIR$CONF_DIR"
    echo "uninstall.sh: removed $CONF_DIR" >&2
else
    echo "uninstall.sh: kept $CONF_DIR (remove it with --purge)" >&2
fi
echo "uninstall.sh: kept /var/lib/inspection-collector (the journal) and the service users" >&2
