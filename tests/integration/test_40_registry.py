"""The registry path, for real, against a registry served on loopback (Debian's docker-registry).

No public registry is reachable here, so the test pushes an image it built to a registry it
runs on 127.0.0.1 under the catalogue's name for ubuntu:24.04, removes the local copy, and
lets labkit pull it through the lab's `registry:` mirror setting.
"""
import shutil
import socket
import subprocess

import pytest

from .conftest import docker, recap, run, wait_port

pytestmark = pytest.mark.integration


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    exe = shutil.which("docker-registry")
    assert exe, "docker-registry is installed by scripts/setup.sh"
    d = tmp_path_factory.mktemp("registry")
    port = free_port()
    cfg = d / "config.yml"
    cfg.write_text(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: " + str(d / "data") + "\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen([exe, "serve", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_pull_through_a_registry_mirror(registry, tmp_path, default_lab):
    ref = f"{registry}/library/ubuntu:24.04"
    docker("tag", "labkit/debian:12", ref)
    docker("push", ref)
    pushed = docker("image", "inspect", "--format", "{{.Id}}", ref).strip()
    docker("rmi", ref)

    # images pull: the mechanics alone
    out = run("images", "pull", "ubuntu:24.04", "--registry", registry).stdout
    assert f"{ref}: pulling" in out
    assert docker("image", "inspect", "--format", "{{.Id}}", ref).strip() == pushed
    docker("rmi", ref)

    # labkit up pulls what is missing, runs and provisions it, and down cleans up
    f = tmp_path / "lab.yml"
    f.write_text(f"name: mirror\nstudents: [a]\ncontainers: [ubuntu:24.04]\nregistry: {registry}\n"
                 "vm: {enabled: false}\n")
    try:
        up = run("up", "-f", str(f), "--no-facts")
        assert recap(up.stdout)["failures"] == 0
        info = docker("inspect", "--format", "{{.Config.Image}} {{.Image}}", "labkit-mirror-a-ubuntu2404").split()
        # the pulled image, or the one with the lab's packages baked into it (labkit.images.build.bake)
        base = docker("image", "inspect", "--format", '{{index .Config.Labels "labkit.baked.base"}}', info[1]).strip()
        assert info == [ref, pushed] or (info[0].startswith("labkit/ubuntu2404-pkgs:") and base == pushed), (info, base)
    finally:
        run("down", "-f", str(f))
        subprocess.run(["docker", "rmi", ref], capture_output=True)
    assert docker("ps", "-a", "--filter", "label=labkit.lab=mirror", "-q") == ""
