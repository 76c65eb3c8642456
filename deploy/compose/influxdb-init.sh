#!/bin/bash
# Run by the influxdb:2 image once, after its setup mode created the organisation and the
# bucket (scripts in /docker-entrypoint-initdb.d run only on the first start): the DBRP
# mapping for InfluxQL and the tokens for the recorder and Grafana, written to /tokens.
set -euo pipefail
export INFLUX_TOKEN=${INFLUX_TOKEN:-$DOCKER_INFLUXDB_INIT_ADMIN_TOKEN}
exec bash /opt/inspection-collector/setup-influxdb2.sh \
    --org "$DOCKER_INFLUXDB_INIT_ORG" \
    --bucket "$DOCKER_INFLUXDB_INIT_BUCKET" \
    --database quality \
    --secrets-dir /tokens
