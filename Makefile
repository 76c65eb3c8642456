# Shortcuts for the two commands in the README (make is not needed for them).
.PHONY: demo test setup schemas bench
demo:
	scripts/demo
test:
	scripts/test
setup:
	scripts/setup
schemas:
	.venv/bin/collector schemas --out config/schemas
bench:
	.venv/bin/python tests/perf/gateway_throughput.py
