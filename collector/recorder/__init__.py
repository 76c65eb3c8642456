"""The recorder daemon: records from MQTT into InfluxDB, acknowledged only after the write.

May import the inspection domain, configuration, MQTT plumbing and the stores; never the
gateway, the dashboard or the evidence tools.
"""
