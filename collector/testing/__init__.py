"""Launchers for real Mosquitto and InfluxDB instances on free loopback ports.

Used by the test suite, the benchmarks and ``collector demo``; no product process depends on
it. May import ``collector.errors`` only.
"""
