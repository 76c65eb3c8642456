"""Build the configured store backend."""

from __future__ import annotations

from collector.config_file import InfluxV1Settings, InfluxV2Settings
from collector.store.base import Store


def open_store(settings: InfluxV1Settings | InfluxV2Settings) -> Store:
    if isinstance(settings, InfluxV1Settings):
        from collector.store.influx_v1 import InfluxV1Store

        return InfluxV1Store(
            settings.url,
            settings.database,
            retention_policy=settings.retention_policy,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password is not None else None,
            timeout=settings.timeout,
        )
    from collector.store.influx_v2 import InfluxV2Store

    return InfluxV2Store(
        settings.url,
        settings.token.get_secret_value(),
        settings.org,
        settings.bucket,
        database=settings.database,
        retention_policy=settings.retention_policy,
        timeout=settings.timeout,
    )
