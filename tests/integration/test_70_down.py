"""Last in the run: `labkit down` removes exactly the lab's labelled resources, idempotently."""
import pytest

from .conftest import docker, run, virsh

pytestmark = pytest.mark.integration


def test_down_removes_everything_and_is_idempotent(default_lab):
    other = docker("run", "-d", "--label", "labkit.lab=someone-else", "labkit/busybox:1.35", "sleep", "600").strip()
    try:
        out = run("down").stdout
        assert "removed 4 containers, 1 network, 1 VM" in out
        assert not [d for d in virsh("list", "--all", "--name") if d.startswith("labkit-demo-")]
        assert not [v for v in virsh("vol-list", "default") if v.startswith("labkit-demo-")]
        assert docker("ps", "-a", "--filter", "label=labkit.lab=demo", "-q") == ""
        assert docker("network", "ls", "--filter", "label=labkit.lab=demo", "-q") == ""
        assert other[:12] in docker("ps", "-q", "--no-trunc") or other in docker("ps", "-q", "--no-trunc")
        again = run("down").stdout
        assert "removed 0 containers, 0 networks, 0 VMs" in again
    finally:
        docker("rm", "-f", other)
