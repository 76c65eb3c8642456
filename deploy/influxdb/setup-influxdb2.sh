#!/usr/bin/env bash
# Prepare an InfluxDB 2.x for the inspection collector, with the influx CLI 2.x.
#
#   INFLUX_HOST=http://127.0.0.1:8086 INFLUX_TOKEN=<an operator or all-access token> \
#   setup-influxdb2.sh --org ORG [--bucket quality] [--database quality] [--rp autogen]
#                      [--secrets-dir /etc/inspection-collector/secrets] [--rotate]
#
# (or an active "influx config" instead of the variables). Safe to run again.
#
# 1. The bucket, with infinite retention. The records are quality evidence: ISO 13485
#    (4.2.5) asks that records be kept at least for the lifetime of the medical device and
#    no less than two years from its release. An existing bucket is not changed; the
#    script warns when its retention is not infinite.
# 2. A DBRP mapping (database DATABASE, retention policy RP -> the bucket, default), so
#    that InfluxQL on /query, which the recorder, collector trace / verify and Grafana
#    use, reaches the bucket.
# 3. Two API tokens, written to SECRETS_DIR (0640) and referenced from the configurations
#    as token: {file: ...}:
#      influxdb-recorder-token  (description inspection-collector-recorder): read and write
#                               on the bucket only (the recorder checks the bucket exists
#                               and queries it once at start-up, hence read);
#      influxdb-reader-token    (inspection-collector-reader): read on the bucket only, for
#                               the dashboard, Grafana, collector trace and verify.
#    A token whose file exists is kept. --rotate creates new tokens and writes them; the
#    old ones keep working until you delete them (the script prints the command) once the
#    services that use them were restarted (docs/operations.md).
#
# Not run against a real InfluxDB 2.x in this project's CI (no Debian package; see
# README.md); the influx CLI's table output (--hide-headers) is parsed with awk.
set -euo pipefail
shopt -s inherit_errexit
umask 027

ORG=${INFLUX_ORG:-}
BUCKET=quality
DATABASE=
RP=autogen
SECRETS_DIR=/etc/inspection-collector/secrets
ROTATE=no

die() { echo "setup-influxdb2: $*" >&2; exit 2; }
say() { echo "setup-influxdb2: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --org) ORG=${2:?}; shift 2 ;;
        --bucket) BUCKET=${2:?}; shift 2 ;;
        --database) DATABASE=${2:?}; shift 2 ;;
        --rp) RP=${2:?}; shift 2 ;;
        --secrets-dir) SECRETS_DIR=${2:?}; shift 2 ;;
        --rotate) ROTATE=yes; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
DATABASE=${DATABASE:-$BUCKET}
[ -n "$ORG" ] || die "--org is required (or INFLUX_ORG)"
for v in "$BUCKET" "$DATABASE" "$RP"; do
    [[ "$v" =~ ^[A-Za-z0-9_.-]+$ ]] || die "names may hold letters, digits, '.', '_' and '-' only: $v"
done
command -v influx >/dev/null 2>&1 || die "the influx CLI 2.x is missing"
# Debian's influxdb-client package installs the 1.x shell under the same name.
influx version 2>/dev/null | grep -q "Influx CLI" || die "'influx' is not the InfluxDB 2.x CLI (influx version)"

# --- 1. bucket -------------------------------------------------------------------------------
row=$(influx bucket list --org "$ORG" --name "$BUCKET" --hide-headers 2>/dev/null | head -n 1 || true)
if [ -z "$row" ]; then
    row=$(influx bucket create --org "$ORG" --name "$BUCKET" --retention 0 \
        --description "inspection records (evidence: keep)" --hide-headers)
    say "created bucket $BUCKET with infinite retention"
elif ! grep -qi "infinite" <<<"$row"; then
    say "WARNING: bucket $BUCKET exists with a finite retention period: records will be deleted"
    say "WARNING: (influx bucket update --id <id> --retention 0 keeps them)"
fi
bucket_id=$(awk 'NR == 1 { print $1 }' <<<"$row")
[[ "$bucket_id" =~ ^[0-9a-f]{16}$ ]] || die "could not read the bucket id from: $row"

# --- 2. DBRP mapping for InfluxQL ---------------------------------------------------------------
if influx v1 dbrp list --org "$ORG" --bucket-id "$bucket_id" --hide-headers \
        | awk -v db="$DATABASE" '$2 == db { found = 1 } END { exit !found }'; then
    say "InfluxQL database $DATABASE already maps to bucket $BUCKET"
else
    influx v1 dbrp create --org "$ORG" --db "$DATABASE" --rp "$RP" --bucket-id "$bucket_id" --default >/dev/null
    say "InfluxQL database $DATABASE / retention policy $RP now maps to bucket $BUCKET"
fi

# --- 3. tokens --------------------------------------------------------------------------------------
auth_ids() { # the ids of the authorizations with this description
    influx auth list --org "$ORG" --hide-headers | awk -v d="$1" '$2 == d { print $1 }'
}

write_secret() { # write_secret FILE VALUE: atomically, 0640, group collector when it exists
    local file=$1 tmp
    mkdir -p "$(dirname "$file")"
    tmp=$(mktemp "$file.XXXXXX")
    printf '%s' "$2" > "$tmp"   # no newline: Grafana's $__file{} takes the file as it is
    chmod 0640 "$tmp"
    if getent group collector >/dev/null 2>&1; then chgrp collector "$tmp"; fi
    mv -f "$tmp" "$file"
}

token() { # token NAME PERMISSION-FLAGS...: the token of user NAME (recorder, reader)
    local desc="inspection-collector-$1" file="$SECRETS_DIR/influxdb-$1-token" old new
    shift
    old=$(auth_ids "$desc")
    if [ -s "$file" ] && [ -n "$old" ] && [ "$ROTATE" = no ]; then
        say "token $desc exists ($file); --rotate replaces it"
        return
    fi
    new=$(influx auth create --org "$ORG" --description "$desc" "$@" --hide-headers | awk 'NR == 1 { print $3 }')
    [[ "$new" =~ ^[A-Za-z0-9_=-]{20,}$ ]] || die "could not read the new token for $desc"
    write_secret "$file" "$new"
    say "token $desc written to $file"
    local id
    for id in $old; do
        say "the previous token $id of $desc still works: after restarting its users, run"
        say "    influx auth delete --id $id"
    done
}

token recorder --read-bucket "$bucket_id" --write-bucket "$bucket_id"
token reader --read-bucket "$bucket_id"
say "done"
