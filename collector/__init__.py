"""Inspection data collector: domain, gateway, recorder, stores and CLI."""

__version__ = "0.1.0"
