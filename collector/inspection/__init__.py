"""What an inspection is: specifications, units, the tolerance rule, the station's workflow, SPC.

The domain, with no I/O: models (characteristic, plan, gauge), units and exact conversion,
the tolerance check, record drafts, the station (who measures which part against which
plan), statistical process control. May import ``collector.errors``, the chain's time format
(``collector.chain.blocks``), roles and signatures (``collector.people.register``), the
drivers' ``base`` (the Reading it judges) and ``registry``, and -- the station only -- its
settings models from ``collector.config``; never a daemon, a store, MQTT or the web.
"""
