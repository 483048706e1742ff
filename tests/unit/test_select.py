"""Which lab a command acts on (no engine needed): -f, --lab, $LABKIT_LAB, ./lab.yml, the
one lab that is up, the built-in default only where a command may create it."""
import json

import pytest

from labkit import api
from labkit.errors import NotUp, UsageError
from labkit.lab.spec import load_lab


def _bring_up(home, name: str) -> None:
    """What `labkit up` leaves behind: the lab's saved spec."""
    d = home / "labs" / name
    d.mkdir(parents=True)
    (d / "lab.json").write_text(json.dumps({"name": name, "students": ["a"], "containers": ["busybox"],
                                            "vm": {"enabled": False}}))


@pytest.fixture
def here(tmp_path, labkit_home, monkeypatch):
    monkeypatch.delenv("LABKIT_LAB", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_nothing_up_needs_a_lab_except_for_up(here):
    with pytest.raises(NotUp) as e:
        api.select_lab()
    assert e.value.exit_code == 8 and "no lab is up" in e.value.message
    sel = api.select_lab(default_ok=True)
    assert sel.lab.name == "demo" and "built-in default" in sel.why


def test_the_one_lab_that_is_up_is_picked_and_said(here, labkit_home):
    _bring_up(labkit_home, "net101")
    sel = api.select_lab()
    assert sel.lab.name == "net101" and sel.why.startswith("the only lab that is up")
    assert api.select_lab(default_ok=True).lab.name == "net101"  # `labkit up` again: that lab


def test_two_labs_up_is_ambiguous_and_names_both(here, labkit_home):
    _bring_up(labkit_home, "net101")
    _bring_up(labkit_home, "exam")
    with pytest.raises(UsageError) as e:
        api.select_lab(default_ok=True)
    assert e.value.exit_code == 2 and "exam, net101" in e.value.message and "--lab" in e.value.hint
    assert api.select_lab(name="exam").lab.name == "exam"


def test_lab_file_in_this_folder_wins_over_labs_up(here, labkit_home):
    _bring_up(labkit_home, "net101")
    _bring_up(labkit_home, "exam")
    (here / "lab.yml").write_text("name: mine\nstudents: [x]\ncontainers: [busybox]\nvm: {enabled: false}\n")
    sel = api.select_lab()
    assert sel.lab.name == "mine" and "./lab.yml" in sel.why


def test_env_and_flags(here, labkit_home, monkeypatch, tmp_path):
    _bring_up(labkit_home, "net101")
    (here / "lab.yml").write_text("name: mine\nstudents: [x]\ncontainers: [busybox]\nvm: {enabled: false}\n")
    monkeypatch.setenv("LABKIT_LAB", "net101")
    assert api.select_lab().lab.name == "net101"  # explicit beats the folder's file
    f = tmp_path / "other.yml"
    f.write_text("name: other\nstudents: [x]\ncontainers: [busybox]\nvm: {enabled: false}\n")
    assert api.select_lab(f).lab.name == "other"
    with pytest.raises(UsageError):
        api.select_lab(f, "net101")


def test_unknown_name_lists_only_labs_that_are_up(here, labkit_home):
    _bring_up(labkit_home, "net101")
    (labkit_home / "labs" / "gone").mkdir()  # taken down: its folder stays, its lab.json does not
    with pytest.raises(UsageError) as e:
        api.select_lab(name="gone")
    assert "labs up: net101" in e.value.hint and "gone" not in e.value.hint
    assert api.select_lab(name="demo").lab == load_lab(None)  # the default lab by name, up or not


def test_a_full_down_forgets_the_lab(here, labkit_home):
    _bring_up(labkit_home, "net101")
    api.forget_lab("net101")
    assert api.labs_up() == []
