"""`labkit down` removes a lab's VMs through down.yml on every lab server alike: Python reads
libvirt and names what is the lab's (labkit.names), the playbook removes exactly that. Here
what an interrupted `up` leaves (a defined domain and its disk, a Vagrant folder), made by
hand with virsh, so no VM boots."""
import subprocess

import pytest

from .conftest import run

pytestmark = [pytest.mark.integration, pytest.mark.vm]

DOMAIN = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os><devices><disk type='volume' device='disk'>
<source pool='default' volume='{name}.img'/><target dev='vda' bus='virtio'/></disk></devices></domain>"""


def virsh(*args, check=True):
    return subprocess.run(["virsh", "-q", "-c", "qemu:///system", *args], capture_output=True, text=True, check=check)


def test_down_removes_the_labs_domains_disks_and_folders_and_nothing_else(tmp_path):
    from labkit.paths import lab_dir

    lab = tmp_path / "td.yml"
    lab.write_text("name: td\nstudents: [a, b]\ncontainers: []\nvm: {enabled: true}\n")
    made = ["labkit-td-a-vm", "labkit-td-b-vm", "labkit-td-x-a-vm"]  # the last: lab td-x's, not td's
    for name in made:
        virsh("vol-create-as", "default", f"{name}.img", "1M")
        (tmp_path / f"{name}.xml").write_text(DOMAIN.format(name=name))
        virsh("define", str(tmp_path / f"{name}.xml"))
    (lab_dir("td-x") / "keep").write_text("")  # lab td-x is known here: labkit-td-x-* is its, not student x-a of td
    (lab_dir("td") / "vagrant" / "a").mkdir(parents=True, exist_ok=True)
    try:
        plan = run("down", "-f", str(lab), "--plan", "--json")
        assert '"labkit-td-a-vm"' in plan.stdout and "labkit-td-x-a-vm" not in plan.stdout
        one = run("down", "-f", str(lab), "--student", "b")
        assert "1 VM" in one.stdout
        domains = virsh("list", "--all", "--name").stdout.split()
        assert "labkit-td-b-vm" not in domains and "labkit-td-a-vm" in domains
        out = run("down", "-f", str(lab))
        assert "1 VM" in out.stdout, out.stdout
        domains = virsh("list", "--all", "--name").stdout.split()
        volumes = virsh("vol-list", "default").stdout
        assert not [d for d in domains if d.startswith("labkit-td-") and not d.startswith("labkit-td-x-")]
        assert "labkit-td-a-vm.img" not in volumes and "labkit-td-b-vm.img" not in volumes
        assert "labkit-td-x-a-vm" in domains and "labkit-td-x-a-vm.img" in volumes  # another lab's: untouched
        assert not (lab_dir("td") / "vagrant").exists()
    finally:
        for name in made:
            virsh("undefine", name, "--remove-all-storage", check=False)
            virsh("vol-delete", "--pool", "default", f"{name}.img", check=False)
        import shutil

        shutil.rmtree(lab_dir("td-x"), ignore_errors=True)
