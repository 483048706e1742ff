"""Several lab servers: an offline bundle (checksummed) carried to a second lab server, the
default lab's VM, which `labkit prepare` (role lab_server) readies with its own engine."""
import json
import subprocess
from pathlib import Path

import pytest

from labkit import api

from .conftest import recap, run

pytestmark = [pytest.mark.integration, pytest.mark.vm]
VM = "labkit-demo-s01-vm"


@pytest.fixture(scope="module")
def bundle(vm_server):
    return vm_server["bundle"]


def test_bundle_has_manifest_and_checksums_and_loads_idempotently(bundle, vm_server):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [e["image"] for e in manifest["images"]] == ["labkit/busybox:1.35"]
    assert "images/busybox.tar" in (bundle / "SHA256SUMS").read_text()
    out = run("bundle", "load", str(bundle), "--digest", vm_server["digest"]).stdout
    assert "present with the same recipe, skipped" in out


def test_a_corrupt_bundle_is_refused_naming_the_file(bundle, vm_server, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    with (bad / "images" / "busybox.tar").open("r+b") as f:
        f.seek(100)
        f.write(b"X")
    p = run("bundle", "load", str(bad), "--digest", vm_server["digest"], check=False)  # the sums are whole
    assert p.returncode == 4 and "images/busybox.tar does not match its checksum" in p.stderr


def ssh(cmd: str) -> str:
    cfg = api.ssh_config("demo")
    return subprocess.run(["ssh", "-F", str(cfg), VM, cmd], capture_output=True, text=True, timeout=300,
                          check=True).stdout


def test_the_vm_prepared_as_a_second_lab_server_runs_containers_on_its_own_kernel(vm_server):
    first, second = vm_server["first"], vm_server["second"]  # the image was gone from the VM's engine
    assert recap(first.stdout)["failures"] == 0 and recap(first.stdout)["changed"] > 0
    assert recap(second.stdout)["changed"] == 0, second.stdout
    out = ssh("sudo docker run --rm --network none labkit/busybox:1.35 cat /proc/sys/kernel/random/boot_id").strip()
    vm_boot = ssh("cat /proc/sys/kernel/random/boot_id").strip()
    assert out == vm_boot
    assert out != Path("/proc/sys/kernel/random/boot_id").read_text().strip()
