"""The CLI's tables (labkit.cli.render): a host is named as `labkit shell` takes it and never
cut; on a narrow terminal the least telling columns are left out, and the title says which."""
from rich.console import Console

from labkit.cli.render import facts_table, host_label
from labkit.observe.facts import HostFacts


def _rows(students=("s01", "s02")):
    rows = [HostFacts("lab-server", "server", kernel_release="6.1.0-28-amd64", os_id="debian", os_version="12",
                      pid1="systemd", pkg_mgr="apt-get", virt="none")]
    for s in students:
        for short, role, engine in (("debian12", "container", "docker"),
                                    ("debian12-podman-alice", "container", "podman"), ("vm", "vm", "")):
            rows.append(HostFacts(f"labkit-demo-{s}-{short}", role, s, "debian:12", kernel_release="6.1.0-28-amd64",
                                  os_id="debian", os_version="12", pid1="sleep", pkg_mgr="apt-get", virt="docker",
                                  same_kernel=role != "vm", same_boot=role != "vm", engine=engine,
                                  engine_user="alice" if "alice" in short else ""))
    return rows


def _render(rows, width):
    c = Console(width=width, record=True)
    c.print(facts_table(rows, "demo", width=width))
    return c.export_text()


def test_hosts_are_named_as_labkit_shell_takes_them():
    assert host_label("labkit-demo-s01-debian12", "s01", "demo") == "debian12"
    assert host_label("labkit-demo-s01-vm", "s01", "demo") == "vm"
    assert host_label("lab-server", "", "demo") == "lab-server"
    assert host_label("labkit-other-s01-vm", "s01", "demo") == "labkit-other-s01-vm"  # not this lab's: in full


def test_a_wide_terminal_shows_every_column_and_one_student_needs_no_student_column():
    text = _render(_rows(("s01",)), 220)
    assert "left out" not in text and "student" not in text.splitlines()[1]
    for col in ("engine", "os-release", "kernel release", "PID 1", "pkg manager", "virt", "uid map"):
        assert col in text
    assert "podman (rootless, alice)" in text and "labkit-demo-" not in text


def test_a_narrow_terminal_keeps_the_host_whole_and_says_what_it_left_out():
    text = _render(_rows(), 80)
    lines = text.splitlines()
    assert all(len(ln) <= 80 for ln in lines)
    assert "debian12-podman-alice │ s01" in text and "debian12-podman-alice │ s02" in text  # never cut
    assert "same kernel" in text and "same boot_id" in text  # the facts themselves stay
    assert "left out for width: " in text and "uid map" in text.split("left out for width:")[1]
    assert "--json" in text


def test_columns_from_the_environment_decide_the_width_of_a_pipe(monkeypatch):
    """Not a terminal: 200 columns, or more when $COLUMNS asks (never fewer)."""
    import importlib
    import sys

    from labkit.cli import render

    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    assert importlib.reload(render).out.width == 200
    monkeypatch.setenv("COLUMNS", "400")
    assert importlib.reload(render).out.width == 400
    monkeypatch.setenv("COLUMNS", "80")  # what a child of a process that loaded curses inherits
    assert importlib.reload(render).out.width == 200
    monkeypatch.delenv("COLUMNS")
    importlib.reload(render)
