"""Shared fixtures: certificates per run, a running msa, raw clients."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

import msatest

settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100000")), deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> msatest.Certs:
    return msatest.make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def start_msa(tmp_path: Path, certs: msatest.Certs):
    """Start `msa.py serve` with config overrides; stopped after the test."""
    started: list[msatest.MsaProcess] = []

    def start(**overrides: object) -> msatest.MsaProcess:
        m = msatest.start(tmp_path / f"msa{len(started)}", certs, **overrides)
        started.append(m)
        return m

    yield start
    for m in started:
        if m.proc.poll() is None:
            m.proc.kill()
            m.proc.wait()


@pytest.fixture
def msa(start_msa) -> msatest.MsaProcess:
    return start_msa()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """ONE private redis-server for the tests of one worker (mark them
    ``xdist_group("redis")`` so they share one), stopped by its pid at the
    end. Tests keep apart by their state_prefix (redistest.unused_prefix)."""
    import redistest

    if redistest.REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt install redis-server)")
    from state.redis import module_problem

    if why := module_problem():
        pytest.skip(why)
    server = redistest.RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def fake_mta():
    """A scripted SMTP server for the SMTP hand-off (tests/helpers/fake_mta.py)."""
    from helpers.fake_mta import FakeMta

    mta = FakeMta()
    yield mta
    mta.stop()
