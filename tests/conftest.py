"""Shared pytest set-up."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slurm: needs a local SLURM cluster (root + apt); skipped otherwise")
