"""People: user accounts, roles and password hashing.

May import ``collector.errors`` only (pydantic and the standard library).
"""
