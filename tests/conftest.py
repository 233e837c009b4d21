"""Session-wide fixtures: every server a test talks to is real and started here, on loopback."""

pytest_plugins = [
    "tests.plugins.loopback",
    "tests.plugins.postgres",
    "tests.plugins.storage",
    "tests.plugins.medipim",
    "tests.plugins.kube",
    "tests.plugins.fast",
]
