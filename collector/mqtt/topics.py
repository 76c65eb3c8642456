"""The MQTT topics the gateway, the recorder, the dashboard and the demo share.

Topics (``<prefix>/<site>/<line>/<station>/<kind>``):

- ``record``: inspection records, newline-delimited JSON, one or more per message, QoS 1
- ``alert``: out-of-tolerance alerts, QoS 1
- ``status``: retained station status (online/offline, which gateway serves it)
- ``command``: commands signed with a person's credentials (operator-view accounts), and
  ``ack``: alert acknowledgements (dashboard accounts only); each answered on ``.../reply``
  (``command/reply``, ``ack/reply``). See docs/people.md.

and ``<prefix>/gateways/<gateway id>/status``: the gateway's own retained status, which
the broker's last will sets to offline when the gateway vanishes (MQTT allows one will
per connection, and one gateway may serve several stations); and
``<prefix>/gateways/<gateway id>/stored``: recorders' end-to-end confirmations, JSON
``{"recorder": id, "stored": [[first, last], ...], "dead_lettered": [[first, last], ...]}``.
"""

from __future__ import annotations

#: the station topics a gateway takes commands from: signed commands, and acknowledgements
COMMAND_KINDS = ("command", "ack")


def station_topic(prefix: str, site: str, line: str, station: str, kind: str) -> str:
    return f"{prefix}/{site}/{line}/{station}/{kind}"


def gateway_status_topic(prefix: str, gateway_id: str) -> str:
    return f"{prefix}/gateways/{gateway_id}/status"


def recorder_status_topic(prefix: str, recorder_id: str) -> str:
    return f"{prefix}/recorders/{recorder_id}/status"


def stored_topic(prefix: str, gateway_id: str) -> str:
    """Recorders confirm here which of a gateway's records InfluxDB holds."""
    return f"{prefix}/gateways/{gateway_id}/stored"


def records_filter(prefix: str) -> str:
    return f"{prefix}/+/+/+/record"


def dead_letter_topic(prefix: str) -> str:
    return f"{prefix}/dead-letter"
