"""Fixtures for the end-to-end suite: the pinned CLIs (installed once per machine), the mock upstream
over real HTTP, the tripwire proxy and a fresh gateway per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from isthmus.providers.mock_server import BackgroundMockServer

from .clients import CLI_KINDS, InstallError, base_env, ensure_installed, run_cli
from .harness import E2EGateway, Tripwire, start_gateway, stop_gateway


class GatewayFactory(Protocol):
    """Starts a gateway routing ``models`` (public name → upstream protocol) to the mock, whose answers
    ``knobs`` (e.g. ``+reasoning=3``) steer; it is stopped after the test."""

    def __call__(self, models: dict[str, str], knobs: str = "") -> E2EGateway: ...


PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.fixture(scope="session")
def cli_executables(tmp_path_factory: pytest.TempPathFactory, tripwire: Tripwire) -> dict[str, Path]:
    """The pinned CLIs, installed from npm on first use; a failed install fails the tests (never skips)."""
    try:
        paths = ensure_installed()
    except InstallError as exc:
        pytest.fail(f"the end-to-end clients could not be installed: {exc}", pytrace=False)
    # A package can install yet not run (e.g. its platform binary missing): find out once, here.
    home = tmp_path_factory.mktemp("version-home")
    env = base_env(home, tripwire.url)
    for kind in CLI_KINDS.values():
        run = run_cli([str(paths[kind.package.key]), "--version"], env, home, timeout=60)
        if run.returncode != 0 or kind.package.version not in run.stdout:
            pytest.fail(
                f"{kind.package.spec} is installed but `--version` fails (exit {run.returncode}):\n"
                f"{run.stdout}\n{run.stderr}",
                pytrace=False,
            )
    return paths


@pytest.fixture(scope="session")
def e2e_mock() -> Iterator[BackgroundMockServer]:
    with BackgroundMockServer() as server:
        yield server


@pytest.fixture(scope="session")
def tripwire() -> Iterator[Tripwire]:
    wire = Tripwire().start()
    yield wire
    wire.stop()


@pytest.fixture
def make_gateway(tmp_path: Path, e2e_mock: BackgroundMockServer) -> Iterator[GatewayFactory]:
    started: list[E2EGateway] = []

    def start(models: dict[str, str], knobs: str = "") -> E2EGateway:
        gateway = start_gateway(e2e_mock, models, tmp_path / f"gateway-{len(started)}", knobs)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        stop_gateway(gateway)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item, so fixtures can add diagnostics to failures."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report


def failed(item: pytest.Item) -> bool:
    return any(report.failed for report in item.stash.get(PHASE_REPORTS, {}).values())
