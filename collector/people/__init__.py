"""People: user accounts, roles and password hashing.

May import ``collector.errors`` and ``collector.config_file`` (the placeholder-secret rule)
only (pydantic and the standard library).
"""
