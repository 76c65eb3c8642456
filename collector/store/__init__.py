"""Time-series store backends behind one interface (:class:`Store`), and the storage schema.

The adapters are imported from their modules (``collector.store.influx_v1``,
``collector.store.influx_v2``) so that using one does not import the other's client.
``collector.store.lineprotocol`` is the schema (what a block, a record, an index entry and a
checkpoint become as points); ``collector.store.queries`` builds every InfluxQL statement that
reads them back. May import the chain, configuration (the factory) and ``collector.errors``;
never a daemon.
"""

from collector.errors import StoreError
from collector.store.base import Row, Store

__all__ = ["Row", "Store", "StoreError"]
