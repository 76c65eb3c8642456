"""The hash chain: canonical bytes, sealed and signed blocks, gateway keys, checkpoints.

The one place that says what makes a block evidence (``docs/evidence-format.md`` is its
description for people). The gateway seals with it, the recorder and ``collector verify``
check with it. May import ``collector.errors`` and ``cryptography``; nothing else of the
collector.
"""
