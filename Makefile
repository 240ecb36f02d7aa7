# The two commands: `make up` runs Sophia on embedded defaults, `make test` runs the tests.
# Both create .venv and install what they need on first use.
.PHONY: up test lint bench

up:
	@scripts/bootstrap run
	.venv/bin/sophia up

# The whole suite, then again on the lowest nats-py and mcp releases pyproject.toml allows
# (installed in .venv/lower by the bootstrap): the tests of the code that calls them — the bus
# client, its replies, work and service API, and the edge's MCP (HTTP and stdio, tools,
# resources, progress, cancellation), HTTP API and discovery. The agent scenarios behind the
# edge (memory, tasks, infra, replicas) make the same calls and run once, above.
LOWER_BOUND_TESTS = tests/bus/test_codec.py tests/bus/test_config.py \
	tests/bus/test_declaration.py tests/bus/test_discovery.py tests/bus/test_endpoints.py \
	tests/bus/test_lifecycle.py tests/bus/test_records.py tests/bus/test_replies.py \
	tests/bus/test_stock_client.py tests/bus/test_tracing.py tests/bus/test_wire.py \
	tests/bus/test_work.py tests/edge/test_accounting.py tests/edge/test_api.py \
	tests/edge/test_catalog.py tests/edge/test_inflight.py tests/edge/test_jsonrpc.py \
	tests/edge/test_mcp_http.py tests/edge/test_mcp_stdio.py tests/edge/test_memory_resources.py \
	tests/edge/test_openapi.py tests/edge/test_security.py tests/edge/test_units.py

test:
	@scripts/bootstrap test
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .
	@.venv/bin/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests were collected: failing"; exit 1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	echo "lowest allowed releases: $$(cat .venv/lower/.pins)"; \
	PYTHONPATH=.venv/lower .venv/bin/python -m pytest -q -p no:cacheprovider $(LOWER_BOUND_TESTS); \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests were collected: failing"; exit 1; fi; exit $$rc

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

# The benchmarks, with their baselines (the bench extra: PyTorch, which `make test` leaves out);
# the 30-minute soak is run on its own: .venv/bin/python bench/soak.py --minutes 30
bench:
	@scripts/bootstrap bench
	.venv/bin/python bench/bus.py
	.venv/bin/python bench/memory.py
	.venv/bin/python bench/retrieval.py
	.venv/bin/python bench/indexing.py
	.venv/bin/python bench/context.py
	.venv/bin/python bench/redaction.py
	.venv/bin/python bench/edge.py
	.venv/bin/python bench/cache_quality.py
	.venv/bin/python bench/gateway.py
	.venv/bin/python bench/tasks.py
	.venv/bin/python bench/tracing.py
	.venv/bin/python bench/metrics.py
	.venv/bin/python bench/cluster.py
	.venv/bin/python bench/scaleout.py
