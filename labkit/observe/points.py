"""A pytest plugin for graded tests (`labkit grade`): ``@pytest.mark.points(N)`` gives a test
N points (1 without it); the points go into the JUnit file as a property of the test case."""
from __future__ import annotations

from typing import Any


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "points(n): what a passing test is worth in `labkit grade` (default 1)")


def pytest_collection_modifyitems(items: list[Any]) -> None:
    for item in items:
        m = item.get_closest_marker("points")
        if m is not None:
            item.user_properties.append(("points", m.args[0] if m.args else 1))
