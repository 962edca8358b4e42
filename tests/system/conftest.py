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

Running in parallel (pytest-xdist, `-n N --dist loadgroup`, as make
test-system does; docs/TESTING.md):

  - the tests of a module with a module-scoped fixture (a server started
    once for the module) form one xdist group: they run on one worker,
    which starts that server once;
  - units of work go out longest first, by the durations of the last run
    of this build ($SLUICE_BUILD/test-durations.json, written at the end
    of every run), so that no long test starts last;
  - `--part parallel` leaves out the tests marked serial (they need the
    machine alone), `--part serial` runs only those: make test-system
    runs the first with xdist, then the second in one process.
"""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from sluicetest import BUILD, SLUICED, Daemon, make_cert  # noqa: E402

DURATIONS = BUILD / "test-durations.json"
_times = {}     # nodeid: seconds of this run (setup, call and teardown)


def pytest_addoption(parser):
    parser.addoption(
        "--part", choices=("all", "parallel", "serial"), default="all",
        help="parallel: leave out the tests marked serial; serial: only "
             "those (make test-system runs both, the first under xdist)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: long tests; the ASan run runs them with smaller loads")
    config.addinivalue_line(
        "markers", "serial: needs the machine alone (its proof depends on "
        "timing that other tests' load could change): run after the "
        "parallel part, one test at a time")
    config.addinivalue_line(
        "markers", "xdist_group(name): tests that run on one xdist worker")
    if not hasattr(config, "workerinput"):
        try:
            config._sluice_known = json.loads(DURATIONS.read_text())
        except (OSError, ValueError):
            config._sluice_known = {}
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(_Controller())


class _Controller:
    """xdist hooks (registered only when xdist is loaded)."""

    def pytest_configure_node(self, node):
        """Every worker orders the tests by the same durations: they must
        all collect the same list."""
        node.workerinput["sluice_durations"] = node.config._sluice_known


def _module_scoped(item):
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(
        d.scope in ("module", "package")
        for defs in info.name2fixturedefs.values() for d in defs)


def _weight(item, known):
    """Expected seconds of item: last run's, else a guess."""
    t = known.get(item.nodeid)
    if t is not None:
        return t
    return 10.0 if item.get_closest_marker("slow") else 1.0


@pytest.hookimpl(tryfirst=True)     # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    part = config.getoption("part")
    if part != "all":
        keep, drop = [], []
        for it in items:
            serial = it.get_closest_marker("serial") is not None
            (keep if serial == (part == "serial") else drop).append(it)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    worker = getattr(config, "workerinput", None)
    if worker is None:
        return
    known = worker.get("sluice_durations", {})
    units = {}
    for it in items:
        if it.get_closest_marker("xdist_group") is None and _module_scoped(it):
            it.add_marker(pytest.mark.xdist_group(it.module.__name__))
        g = it.get_closest_marker("xdist_group")
        key = ("g", g.args[0] if g.args else g.kwargs.get("name")) if g \
            else ("t", it.nodeid)
        units.setdefault(key, []).append(it)
    # longest first; a group keeps its tests in their order
    order = sorted(units.values(),
                   key=lambda u: -sum(_weight(i, known) for i in u))
    items[:] = [i for u in order for i in u]


def pytest_runtest_logreport(report):
    """On the xdist controller the workers' reports arrive here too."""
    nodeid = report.nodeid.split("@", 1)[0]
    _times[nodeid] = _times.get(nodeid, 0.0) + report.duration


def pytest_sessionstart(session):
    if not SLUICED.exists():
        pytest.exit(f"{SLUICED} not found: run make all (or set SLUICE_BUILD)",
                    returncode=2)


def pytest_sessionfinish(session):
    """Keep this run's durations for the next run's order (a whole run
    or a part of one: the tests that did not run keep their old time)."""
    config = session.config
    if hasattr(config, "workerinput") or not _times:
        return
    known = dict(config._sluice_known)
    known.update({k: round(v, 2) for k, v in _times.items()})
    tmp = DURATIONS.with_suffix(f".{os.getpid()}")
    try:
        tmp.write_text(json.dumps(known, indent=0, sort_keys=True))
        tmp.replace(DURATIONS)
    except OSError:
        pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report names its directory (configuration, logs,
    spool: kept in /tmp/sluice-* by make) and ends with the last
    log lines of each sluiced it started."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if tmp is not None:
        rep.sections.append(("test directory", str(tmp)))
    for d in getattr(item, "_sluice_daemons", ()):
        if d.log is None:           # never started
            continue
        tail = d.log_text().splitlines()[-40:]
        rep.sections.append((f"sluiced log {d.log} (last lines)",
                             "\n".join(tail)))


@pytest.fixture
def make_sluiced(tmp_path, request):
    daemons = []
    request.node._sluice_daemons = daemons

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
