"""Root conftest of the Strata test suite: every fixture lives in the `fixtures` package."""

pytest_plugins = [
    "fixtures.paths",
    "fixtures.utils",
    "fixtures.ports",
    "fixtures.workdir",
    "fixtures.services",
    "fixtures.auth",
    "fixtures.nats",
    "fixtures.postgres",
    "fixtures.safekeeper",
    "fixtures.pageserver",
    "fixtures.pageserver_env",
    "fixtures.remote_storage",
    "fixtures.storage_controller",
]
