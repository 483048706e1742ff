"""Several lab servers: an offline bundle (checksummed) carried to a second lab server, the
default lab's VM, which `labkit prepare` (role lab_server) readies with its own engine."""
import json
import subprocess
from pathlib import Path

import pytest

from labkit import api

from .conftest import bundle_digest, recap, run, vm_as_lab_server, write_inventory

pytestmark = [pytest.mark.integration, pytest.mark.vm]
VM = "labkit-demo-s01-vm"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, default_lab):
    d = tmp_path_factory.mktemp("bundle")
    lab = d / "lab.yml"
    lab.write_text("name: srv\nstudents: [a]\ncontainers: [busybox]\nvm: {enabled: false}\n")
    # images and checksums are what this file tests; the Debian packages and wheels: test_58
    created = run("bundle", "create", "-f", str(lab), "--no-debs", "--no-wheels", str(d / "b"))
    (d / "b.digest").write_text(bundle_digest(created))
    return d / "b"


def digest(bundle) -> str:
    return (bundle.parent / "b.digest").read_text()


def test_bundle_has_manifest_and_checksums_and_loads_idempotently(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [e["image"] for e in manifest["images"]] == ["labkit/busybox:1.35"]
    assert "images/busybox.tar" in (bundle / "SHA256SUMS").read_text()
    out = run("bundle", "load", str(bundle), "--digest", digest(bundle)).stdout
    assert "present with the same recipe, skipped" in out


def test_a_corrupt_bundle_is_refused_naming_the_file(bundle, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    with (bad / "images" / "busybox.tar").open("r+b") as f:
        f.seek(100)
        f.write(b"X")
    p = run("bundle", "load", str(bad), "--digest", digest(bundle), check=False)  # the sums are whole
    assert p.returncode == 4 and "images/busybox.tar does not match its checksum" in p.stderr


def ssh(cmd: str) -> str:
    cfg = api.ssh_config("demo")
    return subprocess.run(["ssh", "-F", str(cfg), VM, cmd], capture_output=True, text=True, timeout=300,
                          check=True).stdout


def test_the_vm_prepared_as_a_second_lab_server_runs_containers_on_its_own_kernel(bundle, tmp_path):
    inv = tmp_path / "hosts.yml"
    write_inventory(inv, vm_as_lab_server("server-2"))
    ssh("sudo docker rmi -f labkit/busybox:1.35 >/dev/null 2>&1; true")
    first = run("prepare", "-i", str(inv), "--bundle", str(bundle), "--bundle-digest", digest(bundle))
    assert recap(first.stdout)["failures"] == 0 and recap(first.stdout)["changed"] > 0
    second = run("prepare", "-i", str(inv), "--bundle", str(bundle), "--bundle-digest", digest(bundle))
    assert recap(second.stdout)["changed"] == 0, second.stdout
    out = ssh("sudo docker run --rm --network none labkit/busybox:1.35 cat /proc/sys/kernel/random/boot_id").strip()
    vm_boot = ssh("cat /proc/sys/kernel/random/boot_id").strip()
    assert out == vm_boot
    assert out != Path("/proc/sys/kernel/random/boot_id").read_text().strip()
