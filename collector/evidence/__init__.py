"""Reading the evidence back: trace, verify, gauge impact, the part report, Q-DAS export.

What quality teams and auditors run against InfluxDB. May import the inspection domain,
configuration and the stores; never a daemon.
"""
