"""Reading the evidence back: trace, verify, gauge impact, the part report, Q-DAS export.

What quality teams and auditors run against InfluxDB. Records are read from their blocks
and each block is checked first (``checked``); ``verify`` checks whole chains and reports
``findings``. May import the inspection domain, the chain, configuration and the stores (all
InfluxQL through ``collector.store.queries``); never a daemon.
"""
