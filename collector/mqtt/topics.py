"""The MQTT topics the gateway, the recorder, the dashboard and the demo share.

Topics (``<prefix>/<site>/<line>/<station>/<kind>``, see ``docs/evidence-format.md``):

- ``record``: sealed blocks of that station's records, one block per line, QoS 1
- ``alert``: alerts, QoS 1, retained
- ``status``: retained station status (online/offline, which gateway serves it)
- ``command``: commands signed with a person's credentials (operator-view accounts), and
  ``ack``: alert acknowledgements (dashboard accounts only); each answered on ``.../reply``
  (``command/reply``, ``ack/reply``). See docs/people.md.

and per gateway (``<prefix>/gateways/<gateway id>/...``): ``status``, the gateway's own
retained status, which the broker's last will sets to offline when the gateway vanishes
(MQTT allows one will per connection, and one gateway may serve several stations);
``checkpoint``, its newest signed checkpoint (retained); ``stored``, the recorders'
answers: ``{"recorder": id, "stored": [[first, last], ...], "refused": [{"first": n,
"last": m, "reason": text}, ...]}``. Recorders publish their own status on
``<prefix>/recorders/<id>/status`` and refused payloads on ``<prefix>/dead-letter``.
"""

from __future__ import annotations

#: the station topics a gateway takes commands from: signed commands, and acknowledgements
COMMAND_KINDS = ("command", "ack")


def station_topic(prefix: str, site: str, line: str, station: str, kind: str) -> str:
    return f"{prefix}/{site}/{line}/{station}/{kind}"


def parse_station_topic(prefix: str, topic: str) -> tuple[str, str, str, str] | None:
    """(site, line, station, kind) of a station topic under ``prefix``, or None."""
    parts = topic.split("/")
    head = prefix.split("/")
    if len(parts) != len(head) + 4 or parts[: len(head)] != head:
        return None
    site, line, station, kind = parts[len(head) :]
    return site, line, station, kind


def gateway_status_topic(prefix: str, gateway_id: str) -> str:
    return f"{prefix}/gateways/{gateway_id}/status"


def checkpoint_topic(prefix: str, gateway_id: str) -> str:
    """A gateway's newest signed checkpoint, retained."""
    return f"{prefix}/gateways/{gateway_id}/checkpoint"


def checkpoints_filter(prefix: str) -> str:
    return f"{prefix}/gateways/+/checkpoint"


def recorder_status_topic(prefix: str, recorder_id: str) -> str:
    return f"{prefix}/recorders/{recorder_id}/status"


def stored_topic(prefix: str, gateway_id: str) -> str:
    """Recorders answer here which of a gateway's blocks InfluxDB holds, and which they refused."""
    return f"{prefix}/gateways/{gateway_id}/stored"


def records_filter(prefix: str) -> str:
    return f"{prefix}/+/+/+/record"


def alerts_filter(prefix: str) -> str:
    return f"{prefix}/+/+/+/alert"


def dead_letter_topic(prefix: str) -> str:
    return f"{prefix}/dead-letter"
