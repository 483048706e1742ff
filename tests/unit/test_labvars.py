"""labkit.ansible.labvars: a lab file's variables reach Ansible as data."""
import pytest
import yaml

from labkit.ansible import labvars
from labkit.errors import SpecError


def test_steering_names():
    for name in ("ansible_connection", "ansible_host", "ansible_ssh_extra_args", "ansible_docker_extra_args",
                 "ansible_become_exe", "hostvars", "playbook_dir", "role_path"):
        assert labvars.steering(name), name
    for name in ("ansible_timeout", "ansible_become", "ansible_python_interpreter", "webserver_port", "ansiblex"):
        assert not labvars.steering(name), name


def test_refused_with_where_and_hint():
    with pytest.raises(SpecError) as e:
        labvars.data("provision.extra_vars", {"ok": 1, "ansible_connection": "local", "hostvars": {}}, trust=False)
    assert "provision.extra_vars.ansible_connection, provision.extra_vars.hostvars" in e.value.message
    assert "--trust" in e.value.hint


def test_trusted_passes_as_is():
    v = {"ansible_connection": "local", "x": "{{ 1 + 1 }}"}
    out = labvars.data("provision.extra_vars", v, trust=True)
    assert out == v and not isinstance(out["x"], labvars.Unsafe)


def test_every_string_is_unsafe_at_any_depth():
    out = labvars.data("g", {"a": "{{ x }}", "b": [1, "s", {"c": "t"}], "n": 3, "t": True}, trust=False)
    text = labvars.dump(out)
    assert text.count("!unsafe") == 3 and "n: 3" in text and "t: true" in text
    # Ansible's loader reads the tag back; a plain YAML reader sees the tag as unknown
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(text)


def test_trust_from_environment(monkeypatch):
    monkeypatch.delenv(labvars.TRUST_ENV, raising=False)
    assert not labvars.trusted() and labvars.trusted(True)
    monkeypatch.setenv(labvars.TRUST_ENV, "1")
    assert labvars.trusted()
