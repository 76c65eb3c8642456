"""InfluxDB 2.x (and API-compatible servers) through ``influxdb-client`` and InfluxQL.

Writes go through the official client's synchronous write API (``/api/v2/write`` with
org, bucket and ``precision=us``), so a write returns only once the server accepted it:
the recorder acknowledges MQTT messages after that, never after a background batch.

Queries use InfluxQL on the v1-compatible ``/query`` endpoint, authorised with the
token, with ``db`` naming the bucket's database/retention-policy (DBRP) mapping. That is
the same query language and answer format as InfluxDB 1.x, so trace, verify and export
work unchanged on every backend (Flux is deprecated in 3.x). InfluxDB 2.2 and newer
create a virtual mapping named after each bucket, hence ``database`` defaults to the
bucket name; older 2.x servers need ``influx v1 dbrp create``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import urllib3
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision

from collector.errors import StoreError
from collector.store.base import Row, Store
from collector.store.influx_v1 import DEFAULT_CHUNK_SIZE, InfluxHttp, retryable_status, server_message


def _api_error(exc: InfluxDBError, action: str) -> StoreError:
    status: int | None = getattr(exc, "status", None)
    if status is None and getattr(exc, "response", None) is not None:
        status = getattr(exc.response, "status", None)
    body = getattr(exc, "body", None)
    if isinstance(body, bytes | str) and body:
        message = server_message(body if isinstance(body, bytes) else body.encode("utf-8"))
    else:
        message = str(getattr(exc, "message", "") or getattr(exc, "reason", "") or exc)
    retryable = True if status is None else retryable_status(status)
    where = f"HTTP {status}" if status is not None else "no response"
    return StoreError(f"{action} refused ({where}): {message}", retryable=retryable, status=status)


class InfluxV2Store(Store):
    """A bucket on InfluxDB 2.x: token, org and bucket; InfluxQL through its DBRP mapping."""

    def __init__(
        self,
        url: str,
        token: str,
        org: str,
        bucket: str,
        database: str | None = None,
        retention_policy: str | None = None,
        timeout: float = 10.0,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        # InfluxHttp validates the URL (scheme, no credentials in it) before the client
        # sees it, and serves the InfluxQL queries.
        self._http = InfluxHttp(url, timeout=timeout, authorization=f"Token {token}")
        # retries=False: the recorder owns the retry policy (and counts what it retries);
        # hidden retries inside the client would only delay its alarm.
        self._client: Any = InfluxDBClient(url=url, token=token, org=org, timeout=int(timeout * 1000), retries=False)
        self._write_api: Any = self._client.write_api(write_options=SYNCHRONOUS)
        self.org = org
        self.bucket = bucket
        self.database = database or bucket
        self.retention_policy = retention_policy or None
        self.chunk_size = chunk_size
        mapping = f" db={self.database}" + (f" rp={self.retention_policy}" if self.retention_policy else "")
        self.description = f"influxdb-v2 {self._http.url} org={org} bucket={bucket}{mapping}"

    def ensure_database(self) -> None:
        """Check that the bucket exists and that InfluxQL reaches it. Creates nothing.

        Buckets carry a retention period and permissions that an administrator decides;
        creating one silently with defaults would hide a misspelt bucket name.
        """
        try:
            found = self._client.buckets_api().find_buckets(name=self.bucket, org=self.org)
        except InfluxDBError as exc:
            raise _api_error(exc, f"{self.description}: looking up the bucket") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreError(f"{self.description}: looking up the bucket failed: {exc!r}") from exc
        buckets = getattr(found, "buckets", None) or []
        if not any(getattr(b, "name", None) == self.bucket for b in buckets):
            raise StoreError(
                f"{self.description}: bucket {self.bucket!r} does not exist in org {self.org!r} "
                f"(or the token may not read it); create it with: influx bucket create "
                f"--org {self.org} --name {self.bucket} --retention <period>",
                retryable=False,
            )
        try:
            for _ in self.iter_query("SHOW MEASUREMENTS LIMIT 1"):
                pass
        except StoreError as exc:
            if exc.retryable:
                raise
            raise StoreError(
                f"{exc}; InfluxQL needs a database/retention-policy mapping named "
                f"{self.database!r} for bucket {self.bucket!r} "
                f"(influx v1 dbrp create --db {self.database} --rp <rp> --bucket-id <id> --default)",
                retryable=False,
                status=exc.status,
            ) from exc

    def write_lines(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        try:
            self._write_api.write(
                bucket=self.bucket,
                org=self.org,
                record="\n".join(lines),
                write_precision=WritePrecision.US,
            )
        except InfluxDBError as exc:
            raise _api_error(exc, f"{self.description}: write of {len(lines)} lines") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreError(f"{self.description}: write failed: {exc!r}", retryable=True) from exc

    def iter_query(self, influxql: str) -> Iterator[Row]:
        params = {"db": self.database, "epoch": "u", "chunked": "true", "chunk_size": str(self.chunk_size)}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        return self._http.iter_query(params, influxql, what=f"{self.description}: query")

    def close(self) -> None:
        self._http.close()
        api_client = getattr(self._client, "api_client", None)
        pool_manager = getattr(getattr(api_client, "rest_client", None), "pool_manager", None)
        pools = getattr(pool_manager, "pools", None)
        # urllib3 2.x closes a pool's keep-alive connections only when the pool is garbage
        # collected, and the client keeps its last response (which references the pool)
        # alive: without this the sockets stay open until the process ends.
        if pools is not None:
            for key in pools.keys():  # noqa: SIM118 - the container refuses iteration
                pool = pools.get(key)
                if pool is not None:
                    pool.close()
        if api_client is not None:
            api_client.last_response = None
        self._write_api.close()
        self._client.close()
