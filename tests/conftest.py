"""Shared pytest configuration.

Tests under ``tests/integration/`` and ``tests/e2e/`` are marked ``integration`` automatically
(they need the real control plane and vcsim from ``hack/testenv``), so

    pytest -m "not integration"     # unit tests only: no Go binaries, no servers
    pytest                          # everything; the `testenv` fixture brings the env up

The environment is only started when a test asks for the ``testenv`` fixture (or one built
on it), so selecting unit tests never starts anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
_ENV_DIRS = (_TESTS / "integration", _TESTS / "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path)).resolve()
        if any(path.is_relative_to(d) for d in _ENV_DIRS):
            item.add_marker(pytest.mark.integration)


# A run in which no test ran (all skipped, say, because something they need was missing) is
# not a pass: `make test` and `.ci/run` must fail then. pytest itself exits 5 only when none
# was collected; here a run without a single executed test exits 5 as well.
_ran = [0]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and not report.skipped:
        _ran[0] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if (
        exitstatus == pytest.ExitCode.OK
        and session.testscollected
        and not _ran[0]
        and not session.config.option.collectonly
    ):
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
