"""Protocol-true peers of every driver, for tests and the demo (no hardware needed)."""
