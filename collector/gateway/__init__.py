"""The gateway daemon: devices -> stations -> journal -> broker, and the operator view it serves.

``daemon`` runs it, ``journal`` keeps every record durable before it is published,
``publisher`` delivers the journal over MQTT, ``operator_view`` is the inspector's screen.
May import the inspection domain, the chain, people, configuration, alarms, MQTT and web
plumbing and the drivers' registry; never the recorder, the dashboard or the evidence tools.
"""
