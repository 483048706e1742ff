"""Bad input gets one clear error and creates nothing (real engine, real CLI)."""
import pytest

from .conftest import docker, run

pytestmark = pytest.mark.integration


def nothing_of(lab):
    assert docker("ps", "-a", "--filter", f"label=labkit.lab={lab}", "-q") == ""
    assert docker("network", "ls", "--filter", f"label=labkit.lab={lab}", "-q") == ""


@pytest.mark.parametrize("text, needle", [
    ("name: typo\nstudents: [a]\ncontainrs: [debian:12]\n", "containrs: unknown key; did you mean 'containers'"),
    ("name: typo\nstudents: [a]\ncontainers: [debain:12]\n", "unknown distro 'debain:12'"),
    ("name: typo\nstudents: ['a b']\ncontainers: [debian:12]\n", "students[0]"),
])
def test_bad_lab_file_one_line_nothing_created(tmp_path, text, needle):
    f = tmp_path / "lab.yml"
    f.write_text(text)
    p = run("up", "-f", str(f), check=False)
    assert p.returncode == 2
    assert needle in p.stderr and str(f) in p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    nothing_of("typo")


def test_missing_local_image_says_how_to_build_it(tmp_path):
    import os

    f = tmp_path / "lab.yml"
    f.write_text("name: noimg\nstudents: [a]\ncontainers: [debian:12]\nvm: {enabled: false}\n")
    env = dict(os.environ, LABKIT_IMAGE_PREFIX="labkit-test-missing/")
    p = run("up", "-f", str(f), check=False, env=env)
    assert p.returncode == 4
    assert "labkit-test-missing/debian:12" in p.stderr and "labkit images build debian:12" in p.stderr
    nothing_of("noimg")


def test_unreachable_registry_is_a_clear_error_not_a_hang(tmp_path):
    f = tmp_path / "lab.yml"
    f.write_text("name: noreg\nstudents: [a]\ncontainers: [ubuntu:24.04]\nregistry: 127.0.0.1:9\n"
                 "vm: {enabled: false}\n")
    p = run("up", "-f", str(f), check=False, timeout=120)
    assert p.returncode == 4
    assert "127.0.0.1:9/library/ubuntu:24.04" in p.stderr
    nothing_of("noreg")


def test_engine_not_answering_is_named_with_its_fix(tmp_path):
    import os

    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    p = run("up", check=False, env=env)
    assert p.returncode == 3
    assert "Docker engine is not answering" in p.stderr and "dockerd" in p.stderr
    d = run("doctor", "--json", check=False, env=env)
    assert d.returncode == 1
    import json

    engine = next(c for c in json.loads(d.stdout) if c["name"] == "docker engine")
    assert engine["status"] == "fail" and "dockerd" in engine["fix"]


def test_missing_box_says_how_to_build_it(tmp_path):
    import os

    f = tmp_path / "lab.yml"
    f.write_text("name: nobox\nstudents: [a]\ncontainers: []\n")
    env = dict(os.environ, LABKIT_HOME=str(tmp_path / "home"))  # a Vagrant home without the box
    p = run("up", "-f", str(f), check=False, env=env)
    assert p.returncode == 4
    assert "labkit/debian12 is not on this machine" in p.stderr and "labkit box build" in p.stderr
    nothing_of("nobox")
    # a box labkit cannot build is not built under that name by --build either
    f.write_text("name: nobox\nstudents: [a]\ncontainers: []\nvm: {box: labkit/not-built}\n")
    p = run("up", "-f", str(f), "--build", check=False)
    assert p.returncode == 4
    assert "labkit/not-built is not on this machine, and labkit builds only labkit/debian12" in p.stderr
    nothing_of("nobox")
    import subprocess

    doms = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True,
                          text=True).stdout
    assert "labkit-nobox-" not in doms
