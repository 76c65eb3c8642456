"""Time-series store backends behind one interface (:class:`Store`).

The adapters are imported from their modules (``collector.store.influx_v1``,
``collector.store.influx_v2``) so that using one does not import the other's client.
"""

from collector.errors import StoreError
from collector.store.base import Row, Store

__all__ = ["Row", "Store", "StoreError"]
