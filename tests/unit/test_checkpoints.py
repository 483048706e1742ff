"""Checkpoints' records and the restored containers' images: pure logic and files in a
temporary LABKIT_HOME (the real saves and restores: tests/integration/test_reset.py)."""
import pytest

from labkit.api import checkpoint as api
from labkit.errors import SpecError
from labkit.lab.spec import parse_lab
from labkit.plan import checkpoints as store
from labkit.plan.model import Context, ServerRef, make_plan

LAB = parse_lab({"name": "cp", "students": ["s01", "s02"], "containers": ["debian:12"], "vm": {"enabled": False}})


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))


def test_a_restored_container_is_planned_from_its_checkpoint_image():
    ctx = Context((ServerRef("localhost"),), "/x", restored={"labkit-cp-s01-debian12": "labkit-checkpoint/x:stage1"})
    images = {c.name: c.image for c in make_plan(LAB, ctx).containers}
    assert images == {"labkit-cp-s01-debian12": "labkit-checkpoint/x:stage1", "labkit-cp-s02-debian12": "labkit/debian:12"}


def test_restored_images_are_kept_until_dropped():
    assert store.restored_images("cp") == {}
    store.set_restored("cp", {"a": "i1", "b": "i2"})
    store.set_restored("cp", {"b": "i3"})
    assert store.restored_images("cp") == {"a": "i1", "b": "i3"}
    store.drop_restored("cp", ["a"])
    assert store.restored_images("cp") == {"b": "i3"}
    store.drop_restored("cp")
    assert store.restored_images("cp") == {} and not (store.folder("cp").parent / store.FILE).exists()


def test_records_read_back_by_student_then_time():
    for student, name, t in (("s02", "b", 3.0), ("s01", "late", 2.0), ("s01", "early", 1.0)):
        store.write_record("cp", store.Checkpoint(student, name, t, [store.Kept("debian12", "n", "container", "localhost",
                                                                                 "docker", "r", 10)]))
    (store.folder("cp") / "s01" / "broken.json").write_text("{")  # unreadable: left out, not fatal
    assert [(c.student, c.name) for c in store.records("cp")] == [("s01", "early"), ("s01", "late"), ("s02", "b")]
    assert [c.name for c in api.checkpoints(LAB, ["s02"])] == ["b"]
    assert store.load_record("cp", "s01", "late").bytes == 10


@pytest.mark.parametrize("name", ["Stage1", "a/b", "-x", "", "x" * 41, "a b", "../up"])
def test_bad_checkpoint_names_are_refused(name):
    with pytest.raises(SpecError, match="checkpoint name"):
        api.save(LAB, ["s01"], name)


def test_which_students_must_be_said():
    with pytest.raises(SpecError, match="--all-students"):
        api.save(LAB, None, "stage1")
    with pytest.raises(SpecError, match="s09: not a student"):
        api.save(LAB, ["s09"], "stage1")


def test_restoring_a_checkpoint_that_is_not_there_names_those_that_are():
    store.write_record("cp", store.Checkpoint("s01", "stage1", 1.0, []))
    with pytest.raises(SpecError, match="s01's checkpoints: stage1"):
        api.restore(LAB, ["s01"], "stage9")
    with pytest.raises(SpecError, match="s02 has none"):
        api.restore(LAB, ["s02"], "stage1")
