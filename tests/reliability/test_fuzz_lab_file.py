"""Property-based fuzzing of the lab file and roster loaders: whatever the input, the result
is a valid Lab or exactly one SpecError naming the file and where — never a traceback."""
import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labkit.errors import SpecError
from labkit.lab import spec

KEYS = ["name", "students", "containers", "vm", "limits", "provision", "registry", "roster",
        "enabled", "box", "memory", "cpus", "accel", "pids", "user", "packages", "motd", "distro", "nmae"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(["debian:12", "busybox", "debain:12", "s01", "A B",
                                                           "256m", "-1", "x" * 300, "labkit/debian12"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5),
    st.dictionaries(st.sampled_from(KEYS), inner, max_size=6)), max_leaves=25)
labs = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check(path, text):
    try:
        lab = spec.load_lab(path)
    except SpecError as e:
        msg = str(e)
        assert str(path) in msg, msg
        assert "Traceback" not in msg
        return None
    assert lab.name and lab.students
    return lab


@SETTINGS
@given(data=labs)
def test_any_mapping_gives_a_lab_or_one_clear_error(tmp_path, data):
    path = tmp_path / "lab.yml"
    text = yaml.safe_dump(data)
    path.write_text(text)
    _check(path, text)


@SETTINGS
@given(text=st.text(alphabet=string.printable, max_size=200))
def test_any_text_gives_a_lab_or_one_clear_error(tmp_path, text):
    path = tmp_path / "lab.yml"
    path.write_text(text)
    _check(path, text)


@SETTINGS
@given(ids=st.lists(st.text(alphabet=string.ascii_letters + string.digits + "-_ ,\"'", max_size=25), max_size=12))
def test_any_roster_gives_a_lab_or_one_clear_error(tmp_path, ids):
    (tmp_path / "class.csv").write_text("id\n" + "\n".join(ids) + "\n")
    path = tmp_path / "lab.yml"
    path.write_text("name: fuzz\nroster: class.csv\ncontainers: [busybox]\n")
    lab = _check(path, path.read_text())
    if lab is not None:
        assert len(set(lab.students)) == len(lab.students)
        for s in lab.students:
            assert spec.re.match(spec.STUDENT_RE, s)


def test_huge_values_and_names_illegal_for_docker_or_libvirt(tmp_path):
    cases = {
        "students: 100000": "between 1 and 500",
        "students: ['../etc']": "students[0]",
        "students: ['a' ]\nname: 'lab name'": "name",
        "students: [a]\nname: UPPER": "name",
        "students: [a]\nvm: {memory: 99999999}": "vm.memory",
        "students: [a]\nlimits: {pids: 1}": "limits.pids",
        "students: [a]\nlimits: {cpus: 0}": "limits.cpus",
        "students: ['" + "x" * 40 + "']": "students[0]",
        "students: [a]\nregistry: 'http://evil host'": "registry",
    }
    for body, needle in cases.items():
        text = body if body.startswith("students: [a]\nname") else "name: fz\n" + body
        if "\nname:" in body:
            text = body
        text += "\ncontainers: [busybox]\n"
        path = tmp_path / "lab.yml"
        path.write_text(text)
        try:
            spec.load_lab(path)
        except SpecError as e:
            assert needle in str(e), (body, str(e))
        else:
            raise AssertionError(f"accepted: {body}")
