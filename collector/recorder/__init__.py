"""The recorder daemon: records from MQTT into InfluxDB, acknowledged only after the write.

May import the inspection domain, the chain, configuration, alarms, MQTT plumbing and the
stores; never the gateway, the dashboard or the evidence tools.
"""
