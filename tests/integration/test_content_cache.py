"""Lesson content at classroom scale (issue 31), through the real CLI on the real dockerd.

One lab of three students (``h31cc``, a copy of examples/webclass's content, containers only)
is brought up once for the module with the content cache: the first student's container is
converged from the base image and committed as the lab image, the other two start from it and
get the content as its idempotence pass. A second lab (``h31nc``, one student,
``--no-content-cache``) is converged from the base image: a student started from the lab image
ends up as it does (files, packages, users, running services, the role's testinfra tests).
Then the no-op: nothing changed -> content skipped; a role file changed -> it runs; ``--full``
-> it runs; a failed last run -> it runs; and a changed role makes a new lab image.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.labs import down_leftovers

from .conftest import docker, run

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CACHED, PLAIN = "h31cc", "h31nc"
LAB = """name: {name}
students: {students}
containers: [debian:12]
vm: {{enabled: false}}
provision:
  packages: []
  prepare: [prepare.yml]
  playbooks: [site.yml]
  group_vars:
    python:
      webserver_lesson: "Lesson 3: one kernel, many distros"
tests: [tests]
"""
SKIPPED = "playbook and your content skipped"
# what differs between two hosts by design: their names (in the page and nginx's config), the
# deployment's time stamp, and what the engine mounts or writes at start (resolv.conf, hosts)
VOLATILE = ("/srv/webclass/deployed.txt", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf")
# every file and link of the system folders (path, mode, owner, link target), and the checksums of
# the configuration and data folders' files with the host's own names (inventory and host name)
# written HOST, and its lab and student in the message of the day LAB and S: a template that
# names its host is the same template
FILES = (r"find /etc /srv /usr /home /root /var/lib/dpkg /opt -xdev \( -type f -o -type l \) "
         r"-not -path '*/__pycache__/*' -printf '%p %m %u:%g %l\n' | sort; "
         r"find /etc /srv /home /root /var/lib/dpkg -xdev -type f -not -path '*/__pycache__/*' "
         r"""-exec sh -c 'for f; do printf "%s " "$f"; sed "s/$N/HOST/g; s/$(hostname)/HOST/g; s/lab \"$L\" - student $S /lab LAB - student S /" "$f" | sha256sum; done' """
         r"sh {} + | sort")


def _lab(tmp: Path, name: str, students: int) -> Path:
    d = tmp / name
    src = ROOT / "examples" / "webclass"
    shutil.copytree(src, d, ignore=shutil.ignore_patterns("lab.yml", "__pycache__", ".pytest_cache"))
    (d / "lab.yml").write_text(LAB.format(name=name, students=students))
    tests = d / "tests" / "test_webserver.py"  # the one test of the VM's page: these labs have no VM
    tests.write_text(tests.read_text() + "\n\ndel test_containers_reach_the_vms_page  # no VM here\n")
    return d / "lab.yml"


def _sh(container: str, script: str) -> str:
    lab, student = container.split("-")[1:3]
    return subprocess.run(["docker", "exec", "-e", f"N={container}", "-e", f"L={lab}", "-e", f"S={student}",
                           container, "sh", "-c", script],
                          capture_output=True, text=True, check=True).stdout


def _image(container: str) -> str:
    return docker("inspect", "-f", "{{.Config.Image}}", container).strip()


def _label(ref: str, key: str) -> str:
    return docker("image", "inspect", "-f", f'{{{{index .Config.Labels "{key}"}}}}', ref).strip()


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("content")
    cached, plain = _lab(tmp, CACHED, 3), _lab(tmp, PLAIN, 1)
    for name in (CACHED, PLAIN):
        down_leftovers("--lab", name, "-q")
    try:
        # both at once (two labs, nothing shared: the plain one never reads or makes a lab image)
        with ThreadPoolExecutor(2) as ex:
            first_f = ex.submit(run, "up", "-f", str(cached), "--no-facts")
            plain_f = ex.submit(run, "up", "-f", str(plain), "--no-facts", "--no-content-cache")
            first, _ = first_f.result(), plain_f.result()
        yield {"cached": cached, "plain": plain, "first": first.stdout + first.stderr}
    finally:
        for name in (CACHED, PLAIN):  # the plain lab; the cached one too if a test failed before its down
            down_leftovers("--lab", name, "-q")


def test_students_start_from_the_lab_image(labs: dict) -> None:
    assert "content cache: labkit-content:h31cc-debian12-" in labs["first"], labs["first"]
    ref = _image("labkit-h31cc-s02-debian12")
    assert ref.startswith("labkit-content:h31cc-debian12-"), ref
    assert _image("labkit-h31cc-s03-debian12") == ref
    assert _image("labkit-h31cc-s01-debian12") == "labkit/debian:12"  # the builder, from the base image
    base = docker("image", "inspect", "-f", "{{.Id}}", "labkit/debian:12").strip()
    assert _label(ref, "labkit.content.lab") == CACHED
    assert _label(ref, "labkit.content.base") == base
    assert re.fullmatch(r"[0-9a-f]{64}", _label(ref, "labkit.content.key"))
    assert _label(ref, "labkit.content.distro") == "debian:12"


def _normal(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if not any(v in ln for v in VOLATILE)]


def test_a_student_from_the_lab_image_is_one_converged_from_the_base_image(labs: dict) -> None:
    cached, plain = "labkit-h31cc-s02-debian12", "labkit-h31nc-s01-debian12"
    assert _image(plain) == "labkit/debian:12"
    for what, script in {
        "files": FILES,
        "packages": "dpkg-query -W -f '${Package} ${Version} ${db:Status-Status}\\n' | sort",
        "package files changed since installed": "dpkg --verify; true",
        "users": "getent passwd | sort; getent group | sort",
        "services": "ps -eo user=,comm= | sort",
    }.items():
        a, b = _normal(_sh(cached, script)), _normal(_sh(plain, script))
        if what == "services":  # not the probe's own processes
            a, b = ([ln for ln in x if ln.split()[-1] not in ("ps", "sh", "sort")] for x in (a, b))
        extra, missing = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        assert not extra and not missing, f"{what}: only in the lab image's student: {extra[:20]}; " \
                                          f"only in the base image's: {missing[:20]}"
    assert "nginx" in _sh(cached, "ps -eo comm=")
    # the role's own testinfra tests, on every host of both labs
    for lab in (CACHED, PLAIN):
        p = run("verify", "--lab", lab, check=False)
        assert p.returncode == 0 and "test_the_page_names_this_host" in p.stdout, p.stdout + p.stderr


def test_nothing_changed_skips_the_content(labs: dict) -> None:
    p = run("up", "-f", str(labs["cached"]), "--no-facts")
    assert SKIPPED in p.stdout, p.stdout + p.stderr


def test_full_runs_the_content(labs: dict) -> None:
    p = run("up", "-f", str(labs["cached"]), "--no-facts", "--full")
    assert "your content recap" in p.stdout and SKIPPED not in p.stdout, p.stdout
    p = run("up", "-f", str(labs["cached"]), "--no-facts")  # --full wrote the stamp again
    assert SKIPPED in p.stdout, p.stdout


def test_a_failed_last_run_runs_again(labs: dict) -> None:
    site = labs["cached"].parent / "site.yml"
    good = site.read_text()
    site.write_text(good + "\n- name: Fail\n  hosts: python\n  gather_facts: false\n  tasks:\n"
                           "    - name: Fail here\n      ansible.builtin.fail:\n        msg: on purpose\n")
    p = run("up", "-f", str(labs["cached"]), "--no-facts", check=False)
    assert p.returncode == 5 and "on purpose" in p.stdout + p.stderr, p.stdout + p.stderr
    site.write_text(good)  # the content of the last run that ended well, byte for byte: it runs all the same
    p = run("up", "-f", str(labs["cached"]), "--no-facts")
    assert "your content recap" in p.stdout and SKIPPED not in p.stdout, p.stdout


def test_a_changed_role_runs_and_makes_a_new_lab_image(labs: dict) -> None:
    old = _image("labkit-h31cc-s02-debian12")
    old_key = _label(old, "labkit.content.key")
    tpl = labs["cached"].parent / "roles" / "webserver" / "templates" / "index.html.j2"
    tpl.write_text(tpl.read_text() + "<!-- revised -->\n")
    p = run("up", "-f", str(labs["cached"]), "--no-facts")
    assert "your content recap" in p.stdout and SKIPPED not in p.stdout, p.stdout
    # the students' containers are kept (their work too): the content pass brought the change
    assert _image("labkit-h31cc-s02-debian12") == old
    assert "revised" in _sh("labkit-h31cc-s02-debian12", "cat /srv/webclass/index.html")
    # new students (here: two taken down and back) start from a new lab image of the new content
    run("down", "--lab", CACHED, "--student", "s02", "--student", "s03", "-q")
    p = run("up", "-f", str(labs["cached"]), "--no-facts")
    new = _image("labkit-h31cc-s03-debian12")
    assert new.startswith("labkit-content:h31cc-debian12-") and new != old, p.stdout
    assert re.fullmatch(r"[0-9a-f]{64}", _label(new, "labkit.content.key"))
    assert _label(new, "labkit.content.key") != old_key
    assert not _exists(old)  # the old lab image, used by no container any more, is gone
    assert "revised" in _sh("labkit-h31cc-s03-debian12", "cat /srv/webclass/index.html")
    # down removes the lab's lab images
    run("down", "--lab", CACHED, "-q")
    assert not docker("images", "-q", "--filter", f"label=labkit.content.lab={CACHED}").split()


def _exists(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0
