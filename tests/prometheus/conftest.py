"""Fixtures of the metrics tests (SPEC.md §15): ONE private Prometheus per
test session (tests/promtest.py), started on first use and stopped at the
end. The tests that use it carry ``xdist_group("prometheus")`` so that one
worker of ``make test`` runs them all."""

from __future__ import annotations

import pytest
import promtest


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory):
    if promtest.PROMETHEUS is None or promtest.PROMTOOL is None:
        pytest.skip("prometheus is not installed (apt install prometheus)")
    server = promtest.Prometheus(tmp_path_factory.mktemp("prometheus")).start()
    yield server
    server.stop()
