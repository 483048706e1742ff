"""K1..K12 on a live lab, one test case per fact and host (run by `labkit verify`).

The ``view`` fixture and the ``container`` / ``vm`` / ``lab_host`` parameters come from
labkit.verify's plugin: the lab server's and every host's facts, probed through testinfra.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from labkit.observe import checks
from labkit.observe.checks import engine_facts

if TYPE_CHECKING:  # annotations only: labkit.observe.verify is the plugin running these tests
    from labkit.observe.verify import View

RecordProperty = Callable[[str, object], None]  # pytest's record_property fixture


def test_K1(view: View, container: str, record_property: RecordProperty) -> None:
    record_property("detail", checks.k1(view.hosts[container], view.server_of(view.hosts[container])))


def test_K2(view: View, container: str, record_property: RecordProperty) -> None:
    record_property("detail", checks.k2(view.hosts[container], view.server_of(view.hosts[container])))


def test_K3(view: View, vm: str, record_property: RecordProperty) -> None:
    record_property("detail", checks.k3(view.hosts[vm], view.server_of(view.hosts[vm])))


def test_K4(view: View, container: str, record_property: RecordProperty) -> None:
    record_property("detail", checks.k4(view.hosts[container], view.server_of(view.hosts[container])))


def test_K5(view: View, lab_host: str, record_property: RecordProperty) -> None:
    record_property("detail", checks.k5(view.hosts[lab_host], view.server_of(view.hosts[lab_host])))


def test_K6(view: View, lab_host: str, record_property: RecordProperty) -> None:
    record_property("detail", checks.k6(view.hosts[lab_host], view.server_of(view.hosts[lab_host])))


def test_K7(view: View, container: str, record_property: RecordProperty) -> None:
    h = view.hosts[container]
    record_property("detail", checks.k7(h, view.server_of(h), view.neighbours(h)))


def test_K8(view: View, lab_host: str, record_property: RecordProperty) -> None:
    vm_secs = [view.measurements[v]["ready_seconds"] for v in view.vms
               if (view.measurements.get(v) or {}).get("ready_seconds")]
    record_property("detail", checks.k8(view.hosts[lab_host], view.measurements.get(lab_host), vm_secs))


def test_K9(view: View, lab_host: str, record_property: RecordProperty) -> None:
    record_property("detail", checks.k9(view.hosts[lab_host], view.measurements.get(lab_host)))


NO_DOCKER = ("not applicable: this account may not use Docker (a lab of rootless Podman on a classroom machine); "
             "root, or an account granted Docker, checks it")


@pytest.mark.server
def test_K10(view: View, record_property: RecordProperty) -> None:
    if not engine_facts.engine.usable_here():  # a student's account on a classroom machine: no Docker
        pytest.skip(NO_DOCKER)
    record_property("detail", engine_facts.k10())


def test_K11(view: View, vm: str, record_property: RecordProperty) -> None:
    record_property("detail", engine_facts.k11(view.hosts[vm], view.ssh_config))


@pytest.mark.server
def test_K12(view: View, record_property: RecordProperty) -> None:
    if not engine_facts.engine.usable_here():  # chroot(2) is root's too
        pytest.skip(NO_DOCKER)
    record_property("detail", engine_facts.k12(view.server))
