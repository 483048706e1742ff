"""Roles written as public roles are (issue 15): what labkit does to its hosts must not trip them.

No role is fetched (CI has no internet): the role below is written here the way Galaxy's roles
(geerlingguy.git, .nginx, .apache, ...) install a package on Debian: `apt: update_cache=true
cache_valid_time=86400`, then `apt: name=...`. With package lists absent but their folder dated
recently (what an image or box built today looked like before: a VM made from a box built less
than a day earlier failed geerlingguy.git with "No package matching 'git' is available") the
cache looks fresh and nothing is found; labkit's student environment dates such a folder 1970.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.labs import down_leftovers

from .conftest import docker, recap, run

pytestmark = pytest.mark.integration

LAB = "pubrole-apt"
HOST = f"labkit-{LAB}-s1-debian12"

ROLE_TASKS = """---
- name: Update apt cache (Debian).
  ansible.builtin.apt: update_cache=true cache_valid_time=86400

- name: Ensure tree is installed (Debian).
  ansible.builtin.apt:
    name: tree
    state: present
"""


@pytest.fixture(scope="module")
def lab_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pubrole")
    tasks = d / "roles" / "example.aptrole" / "tasks"  # named as Galaxy would name a checkout
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text(ROLE_TASKS)
    f = d / "lab.yml"
    f.write_text(
        f"name: {LAB}\nstudents: [s1]\ncontainers: [debian:12]\nvm: {{enabled: false}}\n"
        "provision:\n  packages: []\n  roles: [example.aptrole]\n"
    )
    run("images", "build", "debian:12")
    down_leftovers("-f", str(f))
    yield f
    down_leftovers("-f", str(f))


def sh(cmd: str) -> str:
    return docker("exec", HOST, "sh", "-c", cmd)


def test_lists_folder_dated_now_without_lists_is_refreshed_by_the_role(lab_file):
    first = run("up", "-f", str(lab_file), "--no-facts", timeout=1200)
    assert recap(first.stdout)["failures"] == 0, first.stdout
    # as a box built an hour ago has it: no lists, their folder dated at the build
    sh(
        "apt-get -y -q remove tree >/dev/null && rm -rf /var/lib/apt/lists/* "
        "/var/lib/apt/periodic/update-success-stamp && mkdir -p /var/lib/apt/lists/partial "
        "&& touch /var/lib/apt/lists"
    )
    # the hosts changed behind labkit's back, the lab did not: `up` alone would skip the content
    # (the no-op, issue 31); --full runs it, as an instructor does after such a change
    again = run("up", "-f", str(lab_file), "--no-facts", "--full", check=False, timeout=1200)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert "No package matching" not in out, out
    assert "install ok installed" in sh("dpkg-query -W -f='${Status}' tree")
    assert sh("ls /var/lib/apt/lists | grep -c _Packages || true").strip() != "0"
    # once the lists are there, labkit leaves their folder alone: changed=0
    third = run("up", "-f", str(lab_file), "--no-facts", "--full", timeout=1200)
    assert recap(third.stdout)["changed"] == 0, third.stdout
    # and with nothing changed, `up` skips the content altogether
    fourth = run("up", "-f", str(lab_file), "--no-facts", timeout=1200)
    assert "playbook and your content skipped" in fourth.stdout, fourth.stdout
