"""Real sandboxes, on the embedded server of the test process, under one looked-up app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import shoal
from shoal.backends import isolation

_why = isolation.problem()
if _why:
    pytest.skip(f"sandboxes cannot run here: {_why}", allow_module_level=True)


@pytest.fixture(scope="session")
def app() -> Iterator[shoal.App]:
    found = shoal.App.lookup("sandbox-tests", create_if_missing=True)
    yield found
    for sandbox in shoal.Sandbox.list(app_id="sandbox-tests"):
        sandbox.terminate()
