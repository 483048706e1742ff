import json

import pytest
from pydantic import ValidationError

from labkit.errors import SpecError
from labkit.lab import spec


def write(tmp_path, text):
    p = tmp_path / "lab.yml"
    p.write_text(text)
    return p


def test_default_lab_is_valid_and_matched():
    lab = spec.load_lab(None)
    assert lab.name == "demo"
    assert [c.distro for c in lab.containers] == ["debian:11", "debian:12", "debian:13", "busybox"]
    assert lab.vm.enabled


def test_shorthands(tmp_path):
    lab = spec.load_lab(write(tmp_path, "name: c1\nstudents: 3\ncontainers: [debian:12, busybox]\nvm: {enabled: false}\n"))
    assert lab.students == ["s01", "s02", "s03"]
    assert lab.containers[1].distro == "busybox"


def test_aliases_resolve_to_canonical(tmp_path):
    lab = spec.load_lab(write(tmp_path, "name: c1\nstudents: [a]\ncontainers: [debian:bookworm]\n"))
    assert lab.containers[0].distro == "debian:12"


@pytest.mark.parametrize("text, expect", [
    ("name: x\nstudents: [a]\ncontainers: [debian:12]\nvm:\n  memroy: 3\n",
     ["lab.yml:5", "vm.memroy", "unknown key", "did you mean 'memory'"]),
    ("name: x\nstudents: [a]\ncontainers:\n  - debian:12\n  - debain:13\n",
     ["lab.yml:5", "containers[1].distro", "unknown distro 'debain:13'", "did you mean 'debian:13'"]),
    ("name: x\nstudents: [Bad_Id]\ncontainers: [debian:12]\n",
     ["lab.yml:2", "students[0]", "'Bad_Id' is not allowed"]),
    ("name: x\nstudents: [a, a]\ncontainers: [debian:12]\n", ["students", "appears twice"]),
    ("name: x\nstudents: [a]\ncontainers: [debian:12, debian:12]\n", ["containers", "listed twice"]),
    ("name: x\nstudnets: [a]\ncontainers: [debian:12]\n", ["studnets", "did you mean 'students'"]),
    ("name: X Y\nstudents: [a]\ncontainers: [debian:12]\n", ["name", "'X Y' is not allowed"]),
    ("name: x\nstudents: [a]\ncontainers: []\nvm: {enabled: false}\n", ["no containers and no VM"]),
    ("name: x\nstudents: [a]\ncontainers: [debian:12]\nlimits: {memory: lots}\n", ["limits.memory", "'lots'"]),
    ("name: x\nstudents: 0\n", ["between 1 and 500"]),
    ("name: [\n", ["not valid YAML"]),
    ("- just\n- a list\n", ["must be a mapping"]),
])
def test_bad_lab_files_name_file_path_and_fix(tmp_path, text, expect):
    with pytest.raises(SpecError) as ei:
        spec.load_lab(write(tmp_path, text))
    msg = str(ei.value)
    assert str(tmp_path / "lab.yml") in msg
    for part in expect:
        assert part in msg, msg
    assert "Traceback" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="lab file not found"):
        spec.load_lab(tmp_path / "nope.yml")


def test_model_is_frozen():
    lab = spec.load_lab(None)
    with pytest.raises(ValidationError):
        lab.name = "other"


def test_schema_exports_and_forbids_extra():
    s = spec.schema()
    json.dumps(s)
    assert s["additionalProperties"] is False
    assert "students" in s["properties"]


def test_roster_csv_and_yaml(tmp_path):
    (tmp_path / "class.csv").write_text("id,name\nalice,Alice A\n\nbob,Bob B\n")
    (tmp_path / "class.yml").write_text("- alice\n- id: carol\n")
    lab = spec.load_lab(write(tmp_path, "name: c\nroster: class.csv\ncontainers: [busybox]\n"))
    assert lab.students == ["alice", "bob"]
    lab = spec.load_lab(write(tmp_path, "name: c\nroster: class.yml\ncontainers: [busybox]\n"))
    assert lab.students == ["alice", "carol"]


def test_roster_errors_name_the_roster(tmp_path):
    (tmp_path / "dup.csv").write_text("alice\nalice\n")
    with pytest.raises(SpecError, match=r"roster .*dup.csv.*appears twice"):
        spec.load_lab(write(tmp_path, "name: c\nroster: dup.csv\ncontainers: [busybox]\n"))
    with pytest.raises(SpecError, match="cannot read the roster"):
        spec.load_lab(write(tmp_path, "name: c\nroster: nope.csv\ncontainers: [busybox]\n"))
    with pytest.raises(SpecError, match="either students: or roster:"):
        spec.load_lab(write(tmp_path, "name: c\nroster: dup.csv\nstudents: [a]\ncontainers: [busybox]\n"))


@pytest.mark.parametrize("line,where", [
    ('roster: "\\0"', r"lab.yml: roster: .*cannot hold a NUL"),
    ("roster: " + "x" * 300, r"lab.yml: roster: .*not a usable path: File name too long"),
    ('students: [a]\ntests: ["a\\0b"]', r"lab.yml:4: tests\[0\]: .*cannot hold a NUL"),
    ("students: [a]\nprovision: {playbooks: [" + "y" * 300 + "]}",
     r"lab.yml:4: provision.playbooks\[0\]: .*not a usable path"),
    ("students: [a]\nprovision: {roles: [" + "r" * 300 + "]}", r"lab.yml:4: provision.roles\[0\]: role .* not found"),
])
def test_a_path_no_file_could_have_is_a_clear_error(tmp_path, line, where):
    """Found by the fuzzing in tests/reliability: a NUL or a name too long was a traceback."""
    with pytest.raises(SpecError, match=where):
        spec.load_lab(write(tmp_path, f"name: c\ncontainers: [busybox]\n{line}\n"))


@pytest.mark.parametrize("extra,key", [
    ("volumes: ['/:/host']", "volumes"),
    ("mounts: [{source: /var/run/docker.sock, target: /var/run/docker.sock}]", "mounts"),
    ("privileged: true", "privileged"),
    ("containers: [{distro: busybox, volumes: ['/etc:/etc']}]", "volumes"),
    ("containers: [{distro: busybox, privileged: true}]", "privileged"),
    ("limits: {memory: 256m, devices: ['/dev/kvm']}", "devices"),
])
def test_a_lab_file_cannot_mount_host_paths_or_raise_privileges(tmp_path, extra, key):
    text = "name: c1\nstudents: [a]\nvm: {enabled: false}\n" + extra + "\n"
    if not extra.startswith("containers"):
        text += "containers: [busybox]\n"
    with pytest.raises(SpecError) as e:
        spec.load_lab(write(tmp_path, text))
    assert f".{key}: unknown key" in e.value.message or f": {key}: unknown key" in e.value.message, e.value.message
