"""Test-wide fixtures: real servers on 127.0.0.1, started once per session."""

pytest_plugins = [
    "tests.fixtures.nats_server",
    "tests.fixtures.nats_cluster",
    "tests.fixtures.stores",
    "tests.fixtures.openai_upstream",
    "tests.fixtures.spans",
    "tests.fixtures.portkey_gateway",
    "tests.fixtures.lambda_api",
    "tests.fixtures.prometheus",
]
