#!/usr/bin/env bash
# Install or upgrade the inspection collector from this source tree.
#
#   deploy/install.sh [--role gateway|central|all] [--prefix /opt/inspection-collector]
#                     [--wheels DIR] [--python python3] [--unit-dir DIR]
#
# Roles: "gateway" (inspection-gateway.service, serial port access), "central"
# (inspection-recorder.service and inspection-dashboard.service, plus the Mosquitto,
# InfluxDB and Grafana templates under PREFIX/share/deploy), "all" (both; the default).
#
# What goes where:
#   PREFIX/venv                      the project in its own virtual environment (replaced whole on upgrade)
#   PREFIX/share/                    examples, templates, operations guide, post-install.sh
#   /etc/inspection-collector/       configuration, 0750 root:collector; ROLE.yaml (0640 root:collector-ROLE)
#                                    and the gateway's user register people.yaml are created from the
#                                    examples only when absent: an upgrade never overwrites them
#   /etc/inspection-collector/secrets/   passwords, tokens, keys ({file: ...} in the configuration):
#                                    gateway-*, recorder-*, dashboard-* (and influxdb-recorder-*,
#                                    influxdb-reader-*) are readable by that service only
#   /var/lib/inspection-collector/ROLE/  each service's data (the gateway's journal, the recorder's
#                                    dead letters), 0750 collector-ROLE; never touched by an upgrade
#
# One system user per service (collector-gateway, collector-recorder, collector-dashboard), all
# in group collector, which may read the configuration directory and nothing else.
#   UNIT_DIR/inspection-*.service    systemd units (/etc/systemd/system; /lib/systemd/system under DESTDIR)
#   /etc/udev/rules.d/99-inspection-gauges.rules.example   stable device names (inactive until renamed)
#
# DESTDIR: when set, everything is written below it (a staging root for a package or an
# image, or CI's temporary root) and nothing outside it is changed: no user is created,
# nothing is chowned, systemd is not called. The commands that remain to be run on the
# target are written to PREFIX/share/post-install.sh (under DESTDIR); without DESTDIR the
# same script is written and run at once. The virtual environment is built for its final
# path (PREFIX/venv) either way.
#
# Idempotent: running it again upgrades the software in place (a new virtual environment is
# built beside the old one and swapped in only once it works; running services are
# restarted), and keeps the configuration, the secrets and the journal.
set -euo pipefail
shopt -s inherit_errexit
umask 022

ROLE=all
PREFIX=/opt/inspection-collector
PYTHON=python3
WHEELS=
UNIT_DIR=
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DESTDIR=${DESTDIR:-}
CONF_DIR=/etc/inspection-collector
DATA_DIR=/var/lib/inspection-collector
UDEV_DIR=/etc/udev/rules.d
SVC_GROUP=collector           # may read /etc/inspection-collector (each service's files are its own)

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "install.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --role) ROLE=${2:?--role needs a value}; shift 2 ;;
        --role=*) ROLE=${1#*=}; shift ;;
        --prefix) PREFIX=${2:?--prefix needs a value}; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --python) PYTHON=${2:?--python needs a value}; shift 2 ;;
        --python=*) PYTHON=${1#*=}; shift ;;
        --wheels) WHEELS=${2:?--wheels needs a directory}; shift 2 ;;
        --wheels=*) WHEELS=${1#*=}; shift ;;
        --unit-dir) UNIT_DIR=${2:?--unit-dir needs a value}; shift 2 ;;
        --unit-dir=*) UNIT_DIR=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

case "$ROLE" in
    gateway) CONFIGS=(gateway) ;;
    central) CONFIGS=(recorder dashboard) ;;
    all) CONFIGS=(gateway recorder dashboard) ;;
    *) die "--role must be gateway, central or all, not '$ROLE'" ;;
esac
UNITS=("${CONFIGS[@]/#/inspection-}")
case "$PREFIX" in
    /*) ;;
    *) die "--prefix must be an absolute path: $PREFIX" ;;
esac
PREFIX=${PREFIX%/}
case "$PREFIX" in
    *[[:space:]]*) die "--prefix must not contain white space (systemd's ExecStart= would split it)" ;;
esac
if [ -n "$DESTDIR" ]; then
    case "$DESTDIR" in
        /*) ;;
        *) DESTDIR=$(pwd)/$DESTDIR ;;
    esac
    DESTDIR=${DESTDIR%/}
fi
if [ -z "$UNIT_DIR" ]; then
    # Units of a local installation belong in /etc/systemd/system; a staged tree (a package,
    # an image) puts them where packages do, leaving /etc/systemd/system to the operator.
    if [ -n "$DESTDIR" ]; then UNIT_DIR=/lib/systemd/system; else UNIT_DIR=/etc/systemd/system; fi
fi
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (or set DESTDIR to install into a staging directory)"
fi
if [ ! -f "$SRC/pyproject.toml" ] || [ ! -d "$SRC/collector" ]; then die "not a source tree: $SRC"; fi
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (apt-get install python3 python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || die "$PYTHON is older than 3.11 (Debian 12 / Raspberry Pi OS bookworm have 3.11)"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || die "$PYTHON cannot create virtual environments (apt-get install python3-venv)"

root=$DESTDIR
share=$PREFIX/share

# --- the virtual environment ------------------------------------------------------------
build_venv() {
    local final=$PREFIX/venv
    local build=$root$PREFIX/venv.new
    local stage
    stage=$(mktemp -d)
    # shellcheck disable=SC2064  # expand now: the trap must remove this very directory
    trap "rm -rf '$stage'" EXIT
    # Build from a copy, so the source tree stays untouched (pip would leave build/ and
    # *.egg-info in it) and may be read-only.
    tar -C "$SRC" --exclude=__pycache__ -cf - pyproject.toml README.md collector drivers simulators \
        | tar -C "$stage" -xf -
    rm -rf "$build"
    mkdir -p "$(dirname "$build")"
    say "building the virtual environment (${final})"
    "$PYTHON" -m venv --prompt inspection-collector "$build"
    local pip=("$build/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile)
    if [ -n "$WHEELS" ]; then
        pip+=(--no-index --find-links "$WHEELS")
    fi
    "${pip[@]}" "$stage"
    # The scripts in bin/ name the interpreter by the path they were built at; make them
    # name the final path (a staging root, and venv.new, are not where they will run).
    local f
    while IFS= read -r f; do
        sed -i "s#${build}#${final}#g" "$f"
    done < <(grep -rlIF -- "$build" "$build/bin" "$build/pyvenv.cfg" || true)
    # Byte-code with the final paths in its tracebacks (ProtectSystem=strict: the services
    # cannot write it at run time).
    "$build/bin/python" -m compileall -q -f -j 0 -s "$build" -p "$final" "$build/lib" >/dev/null
    # It must work before it replaces the running version.
    "$build/bin/python" -c 'import collector.cli, collector.gateway.daemon, collector.recorder.daemon' \
        || die "the new virtual environment does not work; the installed version is unchanged"
    if [ -d "$root$final" ]; then
        rm -rf "$root$final.old"
        mv "$root$final" "$root$final.old"
    fi
    mv "$build" "$root$final"
    rm -rf "$root$final.old" "$stage"
    trap - EXIT
}

# --- files --------------------------------------------------------------------------------
put() { # put MODE SOURCE TARGET: install a file we own (replaced on upgrade)
    install -D -m "$1" "$2" "$root$3"
}

sub_prefix() { # the unit with PREFIX instead of /opt/inspection-collector
    sed "s#/opt/inspection-collector#${PREFIX}#g" "$1"
}

install_device_examples() { # each driver's samples, beside it, as examples/devices/<name>.yaml
    # drivers/<kind>/<driver>/sample.yaml -> <driver>.yaml (mitutoyo_idh -> mitutoyo-idh),
    # sample-<name>.yaml -> <name>.yaml; examples still in config/devices/ keep their name
    local f name
    for f in "$SRC"/drivers/*/sample*.yaml "$SRC"/drivers/*/*/sample*.yaml "$SRC"/config/devices/*.yaml; do
        [ -e "$f" ] || continue
        case "$(basename "$f")" in
            sample.yaml) name=$(basename "$(dirname "$f")" | tr _ -) ;;
            sample-*.yaml) name=$(basename "$f" .yaml); name=${name#sample-} ;;
            *) name=$(basename "$f" .yaml) ;;
        esac
        put 0644 "$f" "$share/examples/devices/$name.yaml"
    done
}

install_files() {
    put 0644 "$SRC/docs/operations.md" "$share/doc/operations.md" 2>/dev/null \
        || say "docs/operations.md not found; skipped"
    local name f
    for name in gateway recorder dashboard people; do
        put 0644 "$SRC/deploy/config/$name.yaml.example" "$share/examples/$name.yaml.example"
    done
    install_device_examples
    put 0755 "$SRC/deploy/install.sh" "$share/deploy/install.sh"
    put 0755 "$SRC/deploy/uninstall.sh" "$share/deploy/uninstall.sh"
    if [ "$ROLE" != gateway ]; then
        for f in mosquitto/mosquitto.conf mosquitto/make-acl.py mosquitto/clients.example.yaml \
                 mosquitto/acl.example influxdb/setup-influxdb1.sh influxdb/setup-influxdb2.sh \
                 grafana/dashboards/quality.json; do
            case "$f" in
                *.sh|*.py) put 0755 "$SRC/deploy/$f" "$share/deploy/$f" ;;
                *) put 0644 "$SRC/deploy/$f" "$share/deploy/$f" ;;
            esac
        done
    fi

    # configuration: the directory and the role's files (the gateway's user register too), never overwritten
    install -d -m 0750 "$root$CONF_DIR" "$root$CONF_DIR/secrets"
    local files=("${CONFIGS[@]}")
    if [ "$ROLE" != central ]; then files+=(people); fi
    for name in "${files[@]}"; do
        local target=$root$CONF_DIR/$name.yaml
        if [ -e "$target" ]; then
            say "kept $CONF_DIR/$name.yaml (the new example is $share/examples/$name.yaml.example)"
        else
            install -m 0640 "$SRC/deploy/config/$name.yaml.example" "$target"
            say "created $CONF_DIR/$name.yaml from the example: edit it before starting the service"
        fi
    done

    # data: one directory per service, created if missing, their contents never touched
    install -d -m 0755 "$root$DATA_DIR"
    for name in "${CONFIGS[@]}"; do
        install -d -m 0750 "$root$DATA_DIR/$name"
    done

    local unit
    for unit in "${UNITS[@]}"; do
        install -d -m 0755 "$root$UNIT_DIR"
        sub_prefix "$SRC/deploy/systemd/$unit.service" > "$root$UNIT_DIR/$unit.service"
        chmod 0644 "$root$UNIT_DIR/$unit.service"
    done

    if [ "$ROLE" != central ]; then
        # an example: udev reads only *.rules, so it does nothing until renamed
        put 0644 "$SRC/deploy/udev/99-inspection-gauges.rules.example" "$UDEV_DIR/99-inspection-gauges.rules.example"
    fi
}

# --- what needs the target system: users, ownership, systemd --------------------------------
write_post_install() {
    local script=$root$share/post-install.sh
    local units="${UNITS[*]/%/.service}"
    local name user
    mkdir -p "$(dirname "$script")"
    {
        echo '#!/usr/bin/env bash'
        echo "# Written by deploy/install.sh (role $ROLE): the steps of the installation that change"
        echo '# the system itself. install.sh runs it unless DESTDIR was set; then run it on the'
        echo '# target, as root, once the files are in place. Safe to run again.'
        echo 'set -euo pipefail'
        echo "# group $SVC_GROUP may read the configuration directory; one system user per service"
        echo "getent group $SVC_GROUP >/dev/null || groupadd --system $SVC_GROUP"
        for name in "${CONFIGS[@]}"; do
            user=collector-$name
            echo "getent group $user >/dev/null || groupadd --system $user"
            echo "id -u $user >/dev/null 2>&1 || useradd --system --gid $user --groups $SVC_GROUP \\"
            echo "    --home-dir $DATA_DIR/$name --no-create-home --shell /usr/sbin/nologin --comment 'inspection $name' $user"
            echo "usermod --append --groups $SVC_GROUP $user"
        done
        if [ "$ROLE" != central ]; then
            echo '# serial ports belong to group dialout'
            echo "getent group dialout >/dev/null || groupadd --system dialout"
            echo "usermod --append --groups dialout collector-gateway"
        fi
        echo "chown root:$SVC_GROUP $CONF_DIR $CONF_DIR/secrets"
        echo "chmod 0750 $CONF_DIR $CONF_DIR/secrets"
        for name in "${CONFIGS[@]}"; do
            local f=$CONF_DIR/$name.yaml
            echo "if [ -f $f ]; then chown root:collector-$name $f; chmod 0640 $f; fi"
        done
        if [ "$ROLE" != central ]; then
            echo "if [ -f $CONF_DIR/people.yaml ]; then chown root:collector-gateway $CONF_DIR/people.yaml; chmod 0640 $CONF_DIR/people.yaml; fi"
        fi
        cat <<POST
# each secret is readable by the service its name starts with, and by no other
for f in $CONF_DIR/secrets/*; do
    [ -f "\$f" ] || continue
    case "\$(basename "\$f")" in
        gateway-*) owner=collector-gateway ;;
        recorder-*|influxdb-recorder-*) owner=collector-recorder ;;
        dashboard-*|influxdb-reader-*) owner=collector-dashboard ;;
        *) owner=root; echo "post-install: \$f: no service may read it (name it gateway-*, recorder-* or dashboard-*)" >&2 ;;
    esac
    getent group "\$owner" >/dev/null || owner=root
    chown "root:\$owner" "\$f"
    chmod 0640 "\$f"
    # the daemons refuse to start with one of these; say so now
    if [ ! -s "\$f" ] || head -n 1 "\$f" | grep -qixE '[[:space:]]*(change[ _.-]?me.*|changeit|password|secret|example|default|admin|xxx)?[[:space:]]*'; then
        echo "post-install: \$f holds a placeholder or nothing: put the real secret there" >&2
    fi
done
POST
        echo "chown root:root $DATA_DIR"
        echo "chmod 0755 $DATA_DIR"
        for name in "${CONFIGS[@]}"; do
            echo "chown collector-$name:collector-$name $DATA_DIR/$name"
            echo "chmod 0750 $DATA_DIR/$name"
        done
        if [ "$ROLE" != central ]; then
            cat <<POST
if [ -e $DATA_DIR/journal.sqlite ]; then
    echo "post-install: a journal of an earlier version is in $DATA_DIR/journal.sqlite; the gateway now runs" >&2
    echo "  as collector-gateway in $DATA_DIR/gateway/. Move it (docs/operations.md, 'Upgrading to one user" >&2
    echo "  per service'): systemctl stop inspection-gateway; mv $DATA_DIR/journal.sqlite* $DATA_DIR/gateway/;" >&2
    echo "  chown collector-gateway: $DATA_DIR/gateway/journal.sqlite*; set gateway.journal in gateway.yaml." >&2
fi
POST
        fi
        echo 'if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then'
        echo '    systemctl daemon-reload'
        echo '    # an upgrade: services that run are restarted on the new version; stopped ones stay stopped'
        echo "    systemctl try-restart $units"
        echo 'fi'
    } > "$script"
    chmod 0755 "$script"
    echo "$script"
}

build_venv
install_files
post=$(write_post_install)

if [ -n "$DESTDIR" ]; then
    say "installed into DESTDIR=$DESTDIR; nothing outside it was changed."
    say "on the target, run as root: $share/post-install.sh (creates the service users, sets ownership, reloads systemd)"
else
    bash "$post"
    say "installed (role $ROLE) in $PREFIX."
    for name in "${CONFIGS[@]}"; do
        say "  next: edit $CONF_DIR/$name.yaml, put its secrets in $CONF_DIR/secrets/, then"
        say "        systemctl enable --now inspection-$name"
    done
fi
