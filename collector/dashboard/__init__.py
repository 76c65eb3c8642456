"""The supervisors' dashboard: live alerts and station status, acknowledgements, traceability.

May import configuration, web and MQTT plumbing, the stores, people (users and passwords) and
the evidence tools (trace, reports, exports); never the gateway or the recorder.
"""
