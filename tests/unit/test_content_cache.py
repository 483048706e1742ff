"""The content cache's decisions and the content checksum (labkit.plan.contentcache): pure."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from labkit.lab.spec import parse_lab
from labkit.plan import contentcache as cc

BASE, LAB_IMG, OLD_IMG = "labkit/debian:12", "labkit-content:l-debian12-new", "labkit-content:l-debian12-old"


def ct(name: str, image: str = BASE) -> NS:
    return NS(name=name, distro="debian:12", image=image)


def test_first_up_converges_one_builder_and_the_others_wait_for_its_image() -> None:
    c = cc.images_for([ct("s1"), ct("s2"), ct("s3")], {}, {LAB_IMG: None}, {BASE: LAB_IMG}, {BASE: "b1"})
    assert c.builders == {"s1": LAB_IMG}
    assert c.images == {"s2": LAB_IMG, "s3": LAB_IMG}


def test_existing_lab_image_serves_every_new_container() -> None:
    c = cc.images_for([ct("s1"), ct("s2")], {}, {LAB_IMG: "b1"}, {BASE: LAB_IMG}, {BASE: "b1"})
    assert c.builders == {} and c.images == {"s1": LAB_IMG, "s2": LAB_IMG}


def test_a_single_new_container_is_no_cache() -> None:
    c = cc.images_for([ct("s1")], {}, {LAB_IMG: None}, {BASE: LAB_IMG}, {BASE: "b1"})
    assert c == cc.Choice()


def test_existing_containers_keep_their_image_when_only_the_content_changed() -> None:
    existing = {"s1": BASE, "s2": OLD_IMG}
    c = cc.images_for([ct("s1"), ct("s2")], existing, {OLD_IMG: "b1", LAB_IMG: None}, {BASE: LAB_IMG}, {BASE: "b1"})
    assert c.images == {"s2": OLD_IMG} and c.builders == {}


def test_a_new_base_image_remakes_containers_of_an_older_lab_image() -> None:
    existing = {"s2": OLD_IMG, "s3": OLD_IMG}
    c = cc.images_for([ct("s1"), ct("s2"), ct("s3")], existing, {OLD_IMG: "b0", LAB_IMG: None}, {BASE: LAB_IMG},
                      {BASE: "b1"})
    assert c.builders == {"s1": LAB_IMG} and c.images == {"s2": LAB_IMG, "s3": LAB_IMG}


def test_containers_outside_the_cache_are_left_alone() -> None:
    c = cc.images_for([ct("s1", "labkit/debian:13"), ct("s2", "labkit/debian:13")], {}, {}, {BASE: LAB_IMG}, {})
    assert c == cc.Choice()


def lab(tmp_path: Path, **prov: object) -> object:
    if not (tmp_path / "site.yml").exists():
        (tmp_path / "site.yml").write_text("- hosts: all\n  tasks: []\n")
        (tmp_path / "roles" / "r" / "tasks").mkdir(parents=True)
        (tmp_path / "roles" / "r" / "tasks" / "main.yml").write_text("- ansible.builtin.debug: {msg: hi}\n")
    data = {"name": "l", "students": 3, "containers": ["debian:12"],
            "provision": {"playbooks": [str(tmp_path / "site.yml")], "roles_path": [str(tmp_path / "roles")],
                          **prov}}
    return parse_lab(data, str(tmp_path / "lab.yml"), "")


def test_digest_follows_files_and_vars(tmp_path: Path) -> None:
    a = cc.digest(lab(tmp_path))
    assert cc.digest(lab(tmp_path)) == a
    (tmp_path / "roles" / "r" / "tasks" / "main.yml").write_text("- ansible.builtin.debug: {msg: changed}\n")
    b = cc.digest(lab(tmp_path))
    assert b != a
    assert cc.digest(lab(tmp_path, group_vars={"python": {"x": 1}})) != b
    (tmp_path / "roles" / "r" / "__pycache__").mkdir()
    (tmp_path / "roles" / "r" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert cc.digest(lab(tmp_path)) == b  # caches are not content


@pytest.mark.parametrize("prov, play, why", [
    ({}, "all", ""),
    ({"group_vars": {"python": {"x": 1}, "debian12": {"y": 2}, "family_debian": {}}}, "python:&debian12", ""),
    ({"group_vars": {"student_s01": {"x": 1}}}, "all",
     "provision.group_vars.student_s01 is not the same for every student"),
    ({}, "student_s01", "a play's hosts 'student_s01' do not treat every student alike"),
    ({}, "labkit-l-s01-debian12", "a play's hosts 'labkit-l-s01-debian12' do not treat every student alike"),
])
def test_why_not(tmp_path: Path, prov: dict, play: str, why: str) -> None:
    lb = lab(tmp_path, **prov)
    (tmp_path / "site.yml").write_text(f"- hosts: {play}\n  tasks: []\n")
    assert cc.why_not(lb, ["debian12"]) == why  # type: ignore[arg-type]


def test_why_not_follows_imported_playbooks_and_the_switch(tmp_path: Path) -> None:
    lb = lab(tmp_path)
    (tmp_path / "inner.yml").write_text("- hosts: server_x\n  tasks: []\n")
    (tmp_path / "site.yml").write_text("- ansible.builtin.import_playbook: inner.yml\n")
    assert "server_x" in cc.why_not(lb, ["debian12"])  # type: ignore[arg-type]
    assert cc.why_not(lb, ["debian12"], off=True) == "--no-content-cache"  # type: ignore[arg-type]


def test_fact_cache_in_the_labs_folder_and_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from labkit.ansible import runner

    monkeypatch.setattr(runner, "lab_dir", lambda lab: tmp_path / lab)
    env = runner.fact_cache_env("l")
    assert env["ANSIBLE_GATHERING"] == "smart" and env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] == str(tmp_path / "l" / "facts")
    d = tmp_path / "l" / "facts"
    d.mkdir(parents=True)
    for h in ("h1", "h2", "h3"):
        (d / h).write_text("{}")
    runner.drop_facts("l", ["h1", "../h2"])  # a name with a path in it is no host of the cache
    assert sorted(p.name for p in d.iterdir()) == ["h2", "h3"]
    runner.drop_facts("l")
    assert not d.exists()
