#!/usr/bin/env bash
# Prepare an InfluxDB 1.x (Debian's influxdb package) for the inspection collector.
#
#   INFLUX_USERNAME=admin INFLUX_PASSWORD=... \
#   setup-influxdb1.sh [--host 127.0.0.1] [--port 8086] [--ssl] [--database quality]
#                      [--shard-duration 4w] [--secrets-dir /etc/inspection-collector/secrets]
#
# Needs the influx 1.x shell (Debian: influxdb-client). Safe to run again; running it again
# after changing a password file sets that password (credential rotation).
#
# 1. Turn on authentication first, in /etc/influxdb/influxdb.conf: [http] auth-enabled = true
#    (then systemctl restart influxdb). The script warns when it is off.
# 2. With authentication on and no user yet, it creates the administrator named by
#    INFLUX_USERNAME / INFLUX_PASSWORD (InfluxDB allows that one statement without
#    credentials); afterwards it logs in as that administrator.
# 3. The database, and its default retention policy "autogen" set to keep everything
#    (DURATION INF). The records are quality evidence: ISO 13485 (4.2.5) asks that records
#    be kept at least for the lifetime of the medical device, and no less than two years
#    from its release; ISO 9001 leaves the period to the organisation. Nothing here deletes
#    records; if a retention period is ever decided, change it deliberately with
#    ALTER RETENTION POLICY and document the decision. Shard groups of 4 weeks (instead of
#    the 7 days InfluxDB picks for INF) keep the number of shards of a decade of data small.
# 4. The users, with passwords from SECRETS_DIR (generated there, 0640, when missing):
#      recorder  (influxdb-recorder-password): READ and WRITE on the database. WRITE to
#                store the records; READ because the recorder checks at start-up that the
#                database is there (a query) and refuses to start otherwise.
#      reader    (influxdb-reader-password): READ only, for the dashboard, Grafana,
#                collector trace and collector verify.
#    Neither is an administrator. Put the files where the configurations name them
#    (password: {file: /etc/inspection-collector/secrets/influxdb-recorder-password}).
set -euo pipefail
shopt -s inherit_errexit
umask 027

HOST=127.0.0.1
PORT=8086
SSL=()
DATABASE=quality
SHARD=4w
SECRETS_DIR=/etc/inspection-collector/secrets

die() { echo "setup-influxdb1: $*" >&2; exit 2; }
say() { echo "setup-influxdb1: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --host) HOST=${2:?}; shift 2 ;;
        --port) PORT=${2:?}; shift 2 ;;
        --ssl) SSL=(-ssl); shift ;;
        --database) DATABASE=${2:?}; shift 2 ;;
        --shard-duration) SHARD=${2:?}; shift 2 ;;
        --secrets-dir) SECRETS_DIR=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[[ "$DATABASE" =~ ^[A-Za-z0-9_]+$ ]] || die "--database: letters, digits and _ only"
[[ "$SHARD" =~ ^[0-9]+[hdw]$ ]] || die "--shard-duration: e.g. 4w, 7d, 168h"
command -v influx >/dev/null 2>&1 || die "the influx shell is missing (apt-get install influxdb-client)"

# Statements go to influx on standard input, so passwords never appear in a process list.
influxql() { # influxql [--anonymous] STATEMENTS: run them, print the JSON answer
    local env=()
    if [ "${1:-}" = --anonymous ]; then
        env=(env -u INFLUX_USERNAME -u INFLUX_PASSWORD)
        shift
    fi
    printf '%s\n' "$1" | "${env[@]}" influx -host "$HOST" -port "$PORT" "${SSL[@]}" -format json
}

quote() { # an InfluxQL string literal
    local s=${1//\\/\\\\}
    printf "'%s'" "${s//\'/\\\'}"
}

password_from() { # password_from FILE: its content, generated first when the file is missing
    local file=$1
    if [ ! -s "$file" ]; then
        mkdir -p "$(dirname "$file")"
        (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$file")
        if getent group collector >/dev/null 2>&1; then
            chgrp collector "$file" && chmod 0640 "$file"
        fi
        say "generated $file"
    fi
    head -n 1 "$file" | tr -d '\r\n'
}

# --- authentication and the administrator ------------------------------------------------
if answer=$(influxql --anonymous "SHOW USERS" 2>&1); then
    say "WARNING: authentication is off: anyone who reaches port $PORT can read and alter records."
    say "WARNING: set [http] auth-enabled = true in /etc/influxdb/influxdb.conf and restart influxdb."
elif grep -q "create admin user first" <<<"$answer"; then
    if [ -z "${INFLUX_USERNAME:-}" ] || [ -z "${INFLUX_PASSWORD:-}" ]; then
        die "no user exists yet: set INFLUX_USERNAME and INFLUX_PASSWORD for the administrator to create"
    fi
    influxql --anonymous "CREATE USER \"$INFLUX_USERNAME\" WITH PASSWORD $(quote "$INFLUX_PASSWORD") WITH ALL PRIVILEGES" >/dev/null
    say "created the administrator $INFLUX_USERNAME"
elif [ -z "${INFLUX_USERNAME:-}" ]; then
    die "authentication is on: set INFLUX_USERNAME and INFLUX_PASSWORD (an administrator)"
fi

# --- database and retention ----------------------------------------------------------------
influxql "CREATE DATABASE \"$DATABASE\"" >/dev/null
if influxql "SHOW RETENTION POLICIES ON \"$DATABASE\"" | grep -q '"autogen"'; then
    influxql "ALTER RETENTION POLICY \"autogen\" ON \"$DATABASE\" DURATION INF SHARD DURATION $SHARD DEFAULT" >/dev/null
else
    influxql "CREATE RETENTION POLICY \"autogen\" ON \"$DATABASE\" DURATION INF REPLICATION 1 SHARD DURATION $SHARD DEFAULT" >/dev/null
fi
say "database $DATABASE: default retention policy autogen keeps everything (INF), shards of $SHARD"

# --- users -----------------------------------------------------------------------------------
users=$(influxql "SHOW USERS")
set_user() { # set_user NAME PASSWORD PRIVILEGE
    local name=$1 password=$2 privilege=$3
    if grep -q "\"$name\"" <<<"$users"; then
        influxql "SET PASSWORD FOR \"$name\" = $(quote "$password")" >/dev/null
    else
        influxql "CREATE USER \"$name\" WITH PASSWORD $(quote "$password")" >/dev/null
    fi
    influxql "REVOKE ALL ON \"$DATABASE\" FROM \"$name\"" >/dev/null
    influxql "GRANT $privilege ON \"$DATABASE\" TO \"$name\"" >/dev/null
    say "user $name: $privilege on $DATABASE"
}
set_user recorder "$(password_from "$SECRETS_DIR/influxdb-recorder-password")" ALL
set_user reader "$(password_from "$SECRETS_DIR/influxdb-reader-password")" READ
say "done"
