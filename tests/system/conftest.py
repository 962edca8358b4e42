"""
conftest.py: fixtures of the system tests.

  sluiced          a started sluiced with the default test settings
  make_sluiced     a factory: make_sluiced(conf={...}, args=[...], wrapper=[...],
                   start=True, listen="[::1]:{port}") for tests that need
                   other settings
  receiver         an SMTP receiver the test controls (ops_util.Receiver)
  cert             (certificate, key): a self-signed pair for mx.test, made
                   once per session with openssl
  browser          headless Chromium (browser.Browser), one per test module

Every daemon is stopped at teardown with SIGTERM; it must exit 0 and its
stderr must hold no sanitizer report (ASan, UBSan, LSan: SLUICE_BUILD=
build-asan). Ports are chosen free at run time, files live in tmp_path.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from sluicetest import SLUICED, Daemon, make_cert  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: long tests; the ASan run runs them with smaller loads")


def pytest_sessionstart(session):
    if not SLUICED.exists():
        pytest.exit(f"{SLUICED} not found: run make all (or set SLUICE_BUILD)",
                    returncode=2)


@pytest.fixture
def make_sluiced(tmp_path):
    daemons = []

    def make(conf=None, args=(), wrapper=(), start=True, name=None, env=None,
             **kw):
        root = tmp_path / (name or f"d{len(daemons)}")
        d = Daemon(root, conf=conf, args=args, wrapper=wrapper, env=env, **kw)
        daemons.append(d)
        if start:
            d.start()
        return d

    yield make
    errors = []
    for d in daemons:
        try:
            d.stop()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


@pytest.fixture
def sluiced(make_sluiced):
    return make_sluiced()


@pytest.fixture
def make_sink(tmp_path):
    """make_sink(...) starts a `sluice sink` (sinkutil.Sink) in its own
    directory; each is checked for a clean exit at teardown."""
    from sinkutil import Sink
    sinks = []

    def make(*args, **kw):
        d = tmp_path / ("s%d" % len(sinks))
        d.mkdir()
        s = Sink(d, *args, **kw)
        sinks.append(s)
        return s

    yield make
    for s in sinks:
        s.check_clean()


@pytest.fixture(scope="session")
def cert(tmp_path_factory):
    """(certificate, key): a self-signed RSA pair for mx.test, 1 day."""
    return make_cert(tmp_path_factory.mktemp("cert"), "mx.test")


@pytest.fixture
def receiver():
    from ops_util import Receiver
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with a fresh profile, started once per module."""
    from browser import Browser
    b = Browser(tmp_path_factory.mktemp("chromium"))
    yield b
    b.quit()
