"""CI details for role authors (issue 29): `labkit test --junit` always writes its file, one case
per step with the failure's message; `--force-handlers`; `labkit inventory --env`; `status`
after `down` says "not up" (exit 8); `labkit init --molecule` writes an ansible-native Molecule
scenario for an existing role. The engines are not needed: the API is stood in for where a lab
would be, and ansible-runner runs for real against localhost."""
from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

from labkit import api
from labkit.ansible import runner
from labkit.api.converge import ContentFailed, ConvergeResult
from labkit.cli import lifecycle
from labkit.cli.main import main
from labkit.errors import Failure, IdempotenceFailed, PlaybookFailed
from labkit.lab import molecule
from labkit.lab.spec import load_lab, parse_lab
from labkit.observe import junit
from labkit.observe.verify import CheckResult

converge_mod = importlib.import_module("labkit.api.converge")  # the module: labkit.api.converge is also a function
ROOT = Path(__file__).resolve().parents[2]
WEBNOTE = ROOT / "tests" / "data" / "roles" / "webnote"
HOST = "labkit-ci-s01-debian12"


def lab(**provision) -> object:
    return parse_lab({"name": "ci", "students": 1, "containers": ["debian:12"], "vm": {"enabled": False},
                      "provision": {"packages": [], **provision}}, "<test>")


def run_result(seconds: float = 1.0) -> runner.RunResult:
    return runner.RunResult("site.yml", "successful", 0, {}, Path("/nonexistent"), seconds)


def converge_failed(step: str = "converge", done: ConvergeResult | None = None) -> ContentFailed:
    e = PlaybookFailed(f"site.yml failed on {HOST} (status failed, rc 2):\n  [{HOST}] Fail on purpose: failed: no",
                       "full output kept in /x", failures=[Failure(HOST, "Fail on purpose", "no")])
    return ContentFailed(e, step, 2.5, done or ConvergeResult(None))


def cases(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    suite = next(s for s in root.iter("testsuite") if s.get("name") == "labkit-test")
    return {c.get("name"): c for c in suite.iter("testcase")}


@pytest.fixture
def fake_lab(monkeypatch):
    """`labkit test` on a stand-in lab: select, up, idempotence, verify and down recorded."""
    calls: list[str] = []
    the_lab = lab(playbooks=["site.yml"])
    monkeypatch.setattr(lifecycle, "select", lambda *a, **k: the_lab)
    monkeypatch.setattr(api, "up", lambda *a, **k: calls.append("up") or SimpleNamespace(
        run=run_result(3.0), converge=ConvergeResult(run_result(2.0))))
    monkeypatch.setattr(api, "idempotence", lambda *a, **k: calls.append("idempotence") or ConvergeResult(
        None, idempotence=run_result()))
    monkeypatch.setattr(api, "verify", lambda *a, **k: calls.append("verify") or [
        CheckResult("K1", HOST, "passed", "same kernel")])
    monkeypatch.setattr(api, "down", lambda *a, **k: calls.append("down"))
    return SimpleNamespace(lab=the_lab, calls=calls)


# ------------------------------------------------------------------ labkit test --junit


def test_junit_after_a_failing_converge_names_step_host_and_task(fake_lab, monkeypatch, tmp_path):
    def up(*a, **k):
        fake_lab.calls.append("up")
        raise converge_failed()

    monkeypatch.setattr(api, "up", up)
    out = tmp_path / "ci" / "results.xml"  # its folder is made
    r = CliRunner().invoke(main, ["test", "--junit", str(out)])
    assert r.exit_code == 5, r.output
    assert fake_lab.calls == ["up", "down"]  # down after the failure, no later step
    c = cases(out)
    assert list(c) == ["up", "prepare", "converge", "idempotence", "verify"]
    assert c["up"].find("failure") is None and c["up"].find("skipped") is None
    fail = c["converge"].find("failure")
    assert fail is not None and fail.get("message") == f"converge: [{HOST}] Fail on purpose: failed: no"
    assert "full output kept in" in fail.text and c["converge"].get("time") == "2.500"
    assert c["prepare"].find("skipped").get("message") == "the lab file has no provision.prepare"
    for later in ("idempotence", "verify"):
        assert "not run" in c[later].find("skipped").get("message")
    assert "step converge failed" in r.output


def test_junit_after_a_failing_prepare_says_prepare(fake_lab, monkeypatch, tmp_path):
    monkeypatch.setattr(api, "up", lambda *a, **k: (_ for _ in ()).throw(converge_failed("prepare")))
    r = CliRunner().invoke(main, ["test", "--junit", str(tmp_path / "j.xml")])
    assert r.exit_code == 5
    c = cases(tmp_path / "j.xml")
    assert c["prepare"].find("failure").get("message").startswith(f"prepare: [{HOST}] Fail on purpose")
    assert "not run" in c["converge"].find("skipped").get("message")


def test_junit_when_idempotence_fails_names_what_changed(fake_lab, monkeypatch, tmp_path):
    def idem(*a, **k):
        raise IdempotenceFailed(f"not idempotent: the second converge changed 1 task(s) on {HOST}:\n"
                                f"  [{HOST}] Write the note", "make those tasks report ok")

    monkeypatch.setattr(api, "idempotence", idem)
    r = CliRunner().invoke(main, ["test", "--junit", str(tmp_path / "j.xml")])
    assert r.exit_code == 6
    c = cases(tmp_path / "j.xml")
    msg = c["idempotence"].find("failure").get("message")
    assert msg.startswith("idempotence: not idempotent") and f"[{HOST}] Write the note" in msg
    assert [n for n in ("up", "converge") if c[n].find("failure") is None] == ["up", "converge"]


def test_junit_when_everything_passes_holds_verify_suites_too(fake_lab, monkeypatch, tmp_path):
    def verify(the_lab, only, junit_path):
        fake_lab.calls.append("verify")
        Path(junit_path).write_text('<testsuites><testsuite name="labkit-verify" tests="1">'
                                    '<testcase classname="K1" name="h"/></testsuite></testsuites>')
        return [CheckResult("K1", HOST, "passed", "")]

    monkeypatch.setattr(api, "verify", verify)
    out = tmp_path / "j.xml"
    r = CliRunner().invoke(main, ["test", "--junit", str(out)])
    assert r.exit_code == 0, r.output
    assert fake_lab.calls == ["up", "idempotence", "verify", "down"]
    c = cases(out)
    assert {n: (e.find("failure"), e.find("skipped") is not None) for n, e in c.items()} == {
        "up": (None, False), "prepare": (None, True), "converge": (None, False), "idempotence": (None, False),
        "verify": (None, False)}
    assert c["up"].get("time") == "3.000" and c["converge"].get("time") == "2.000"
    assert [s.get("name") for s in ET.parse(out).getroot().iter("testsuite")] == ["labkit-test", "labkit-verify"]


def test_junit_when_a_check_fails_names_fact_and_host(fake_lab, monkeypatch, tmp_path):
    monkeypatch.setattr(api, "verify", lambda *a, **k: [CheckResult("K3", "labkit-ci-s01-vm", "failed", "same")])
    r = CliRunner().invoke(main, ["test", "--junit", str(tmp_path / "j.xml"), "--keep"])
    assert r.exit_code == 1
    assert "down" not in fake_lab.calls  # --keep
    fail = cases(tmp_path / "j.xml")["verify"].find("failure")
    assert "K3 on labkit-ci-s01-vm" in fail.get("message")
    assert "labkit verify" in r.output  # what to run next, with the lab kept


def test_junit_is_written_for_a_bad_lab_file_too(tmp_path):
    out = tmp_path / "j.xml"
    r = CliRunner().invoke(main, ["test", "-f", str(tmp_path / "nope.yml"), "--junit", str(out)])
    assert r.exit_code == 2 and "lab file not found" in r.output
    fail = cases(out)["up"].find("failure")
    assert "nope.yml: lab file not found" in fail.get("message")


def test_junit_is_written_when_interrupted(fake_lab, monkeypatch, tmp_path):
    monkeypatch.setattr(api, "idempotence", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    r = CliRunner().invoke(main, ["test", "--junit", str(tmp_path / "j.xml")])
    assert r.exit_code == 130
    err = cases(tmp_path / "j.xml")["idempotence"].find("error")
    assert err is not None and "interrupted" in err.get("message")


def test_junit_in_a_folder_that_cannot_be_made_is_refused_before_anything_runs(fake_lab, tmp_path):
    (tmp_path / "file").write_text("")
    r = CliRunner().invoke(main, ["test", "--junit", str(tmp_path / "file" / "j.xml")])
    assert r.exit_code == 2 and "--junit" in r.output and "cannot make its folder" in r.output
    assert fake_lab.calls == []


def test_a_failed_step_message_keeps_every_failure_in_the_detail():
    e = PlaybookFailed("x failed", "hint", failures=[Failure("h1", "T1", "m1"), Failure("h2", "T2", "m2")])
    message, detail = junit.failure_text(e)
    assert message == "[h1] T1: failed: m1 (and 1 more)"
    assert detail == "x failed\nhint: hint"


# ------------------------------------------------------------------ --force-handlers

NOTIFY_THEN_FAIL = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Change something
      ansible.builtin.command: "true"
      notify: Mark the handler ran
    - name: Fail on purpose
      ansible.builtin.command: "false"
  handlers:
    - name: Mark the handler ran
      ansible.builtin.file:
        path: "{{ marker }}"
        state: touch
        mode: "0644"
"""


@pytest.mark.parametrize("forced", [False, True])
def test_force_handlers_runs_the_notified_handler_after_a_failure(tmp_path, labkit_home, forced):
    pb = tmp_path / "pb.yml"
    pb.write_text(NOTIFY_THEN_FAIL)
    marker = tmp_path / "marker"
    with runner.handlers_forced(forced), pytest.raises(PlaybookFailed) as ei:
        runner.run_playbook(str(pb), lab="t29", extravars={"marker": str(marker)})
    assert marker.exists() is forced
    # without it, the hint says what was lost and the way out
    assert ("--force-handlers" in (ei.value.hint or "")) is (not forced)
    assert "localhost changed something before failing" in (ei.value.hint or "") or forced


def test_force_handlers_is_off_outside_the_block_and_read_from_ansibles_setting(monkeypatch):
    monkeypatch.delenv("ANSIBLE_FORCE_HANDLERS", raising=False)
    with runner.handlers_forced():
        assert runner.forcing_handlers()
    assert not runner.forcing_handlers()
    monkeypatch.setenv("ANSIBLE_FORCE_HANDLERS", "True")
    assert runner.forcing_handlers()


def test_up_run_and_test_take_force_handlers():
    for cmd in ("up", "run", "test"):
        r = CliRunner().invoke(main, [cmd, "--help"])
        assert "--force-handlers" in r.output, cmd


def test_a_failed_run_of_the_labs_content_says_which_step(monkeypatch, labkit_home):
    monkeypatch.setattr(converge_mod, "hosts", lambda *a, **k: [SimpleNamespace(state="running")])
    monkeypatch.setattr(converge_mod, "ssh_configs", lambda *a, **k: {})
    monkeypatch.setattr(converge_mod.inv_mod, "build", lambda *a, **k: {"all": {}})

    ran = []

    def fake_run(pb, **kw):  # prepare and the content in one run (labkit.ansible.parts): its events
        ran.append(Path(pb).name)
        send = kw["on_event"]
        for name, kind, task in (("Prepare", "ok", "P"), ("labkit: prepare done", "skipped", "mark"),
                                 ("Converge", "failed", "T")):
            send({"event": "playbook_on_play_start", "event_data": {"name": name}})
            send({"event": f"runner_on_{kind}", "event_data": {"host": HOST, "task": task, "res": {"msg": "m"}}})
        raise PlaybookFailed("prepare-site.yml failed", failures=[Failure(HOST, "T", "m")],
                             stats={"ok": {HOST: 1}, "failures": {HOST: 1}, "skipped": {HOST: 1}})

    monkeypatch.setattr(converge_mod, "run_playbook", fake_run)
    the_lab = lab(playbooks=[__file__], prepare=[__file__])
    with pytest.raises(ContentFailed) as ei:
        converge_mod.converge_on(the_lab, [], prepare=True)
    assert ran == ["prepare-site.yml"]
    assert ei.value.step == "converge" and ei.value.exit_code == 5
    assert ei.value.done.prepare is not None and ei.value.done.prepare.stats["ok"] == {HOST: 1}
    assert [(f.host, f.task) for f in ei.value.failures] == [(HOST, "T")]
    assert ei.value.message.startswith(f"{converge_mod.lab_dir('ci')}/converge/site.yml failed on {HOST}")


def test_a_run_ansible_could_not_start_goes_again_as_one_run_per_step(monkeypatch, labkit_home):
    """No task ran (Ansible could not read a playbook): prepare and the content run apart, so the
    error is the step's own, as it was before the two ran as one."""
    monkeypatch.setattr(converge_mod, "hosts", lambda *a, **k: [SimpleNamespace(state="running")])
    monkeypatch.setattr(converge_mod, "ssh_configs", lambda *a, **k: {})
    monkeypatch.setattr(converge_mod.inv_mod, "build", lambda *a, **k: {"all": {}})
    ran = []

    def fake_run(pb, **kw):
        ran.append(Path(pb).name)
        if Path(pb).name != "prepare.yml":
            raise PlaybookFailed(f"{pb} failed", failures=[Failure("-", pb, "could not read site.yml")])
        return run_result(0.5)

    monkeypatch.setattr(converge_mod, "run_playbook", fake_run)
    with pytest.raises(ContentFailed) as ei:
        converge_mod.converge_on(lab(playbooks=[__file__], prepare=[__file__]), [], prepare=True)
    assert ran == ["prepare-site.yml", "prepare.yml", "site.yml"]
    assert ei.value.step == "converge" and ei.value.done.prepare is not None


# ------------------------------------------------------------------ inventory --env, status


def test_inventory_env_exports_what_molecule_tests_read(monkeypatch, tmp_path):
    inv = tmp_path / "my lab" / "hosts.yml"
    monkeypatch.setattr(lifecycle, "select", lambda *a, **k: lab())
    monkeypatch.setattr(api, "inventory", lambda *a, **k: ("", inv))
    r = CliRunner().invoke(main, ["inventory", "--env"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert all(ln.startswith("export ") for ln in lines)
    shown = subprocess.run(["sh", "-c", r.output + '\necho "$MOLECULE_INVENTORY_FILE|$ANSIBLE_INVENTORY|$LABKIT_LAB"'],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert shown == f"{inv}|{inv}|ci"  # quoted: a path with a space survives eval
    assert any(ln.startswith("export ANSIBLE_CONNECTION_PLUGINS=") for ln in lines)
    r = CliRunner().invoke(main, ["inventory", "--env", "--path"])
    assert r.exit_code == 2


def _status(monkeypatch, hosts, missing=("labkit-ci-s01-debian12",), networks=()):
    from labkit.cli import observe

    monkeypatch.setattr(observe, "select", lambda *a, **k: lab())
    monkeypatch.setattr(api, "status", lambda _lab: {
        "lab": "ci", "up": any(h["state"] == "running" for h in hosts), "servers": ["localhost"],
        "hosts": hosts, "missing": list(missing), "missing_hosts": [], "networks": list(networks)})


def test_status_after_down_says_not_up_with_exit_8(monkeypatch):
    _status(monkeypatch, [])
    r = CliRunner().invoke(main, ["status"])
    assert r.exit_code == 8
    assert "lab 'ci' is not up: none of its 1 host(s) exists" in r.output and "labkit up" in r.output
    r = CliRunner().invoke(main, ["status", "--json"])
    assert r.exit_code == 8 and json.loads(r.output.split("\nerror:")[0])["up"] is False


def test_status_with_hosts_that_all_stopped_shows_them_and_exits_0(monkeypatch):
    row = {"name": HOST, "role": "container", "student": "s01", "distro": "debian:12", "state": "exited",
           "image": "labkit/debian:12", "spec": "", "server": "localhost", "local": True, "engine": "docker"}
    _status(monkeypatch, [row], missing=())
    r = CliRunner().invoke(main, ["status"])
    assert r.exit_code == 0 and "exited" in r.output  # there, stopped: their states say it (`up` starts them)
    _status(monkeypatch, [dict(row, state="running")], missing=())
    assert CliRunner().invoke(main, ["status"]).exit_code == 0


# ------------------------------------------------------------------ labkit init --molecule


@pytest.fixture
def role(tmp_path) -> Path:
    dest = tmp_path / "webnote"
    shutil.copytree(WEBNOTE, dest)
    return dest


def init(*args: str) -> object:
    return CliRunner().invoke(main, ["init", "--molecule", *args])


def test_init_molecule_writes_an_ansible_native_scenario_reusing_the_roles_own(role, monkeypatch):
    monkeypatch.chdir(role)
    r = init("labkit")
    assert r.exit_code == 0, r.output
    sc = role / "molecule" / "labkit"
    assert sorted(p.relative_to(sc).as_posix() for p in sc.rglob("*") if p.is_file()) == [
        "create.yml", "destroy.yml", "inventory/.gitignore", "inventory/inventory.yml", "lab.yml", "molecule.yml"]
    cfg = yaml.safe_load((sc / "molecule.yml").read_text())
    assert "driver" not in cfg and "platforms" not in cfg  # ansible-native
    assert cfg["ansible"]["executor"]["args"]["ansible_playbook"] == [
        "--inventory=${MOLECULE_SCENARIO_DIRECTORY}/inventory/"]
    assert cfg["ansible"]["env"]["MOLECULE_INVENTORY_FILE"] == "${MOLECULE_SCENARIO_DIRECTORY}/inventory/labkit.yml"
    assert cfg["ansible"]["playbooks"] == {"create": "create.yml", "destroy": "destroy.yml",
                                           "converge": "../default/converge.yml"}
    assert cfg["verifier"] == {"name": "testinfra", "directory": "../default/tests", "options": {
        "v": True, "ansible-inventory": "${MOLECULE_SCENARIO_DIRECTORY}/inventory/"}}
    assert cfg["dependency"] == {"name": "galaxy"}  # carried over as the role had it
    assert cfg["scenario"] == {"name": "labkit", "test_sequence": [
        "dependency", "destroy", "syntax", "create", "converge", "idempotence", "verify", "destroy"]}
    spec = load_lab(sc / "lab.yml")
    assert spec.name == "webnote-labkit" and [c.distro for c in spec.containers] == ["debian:12", "debian:13"]
    assert spec.vm.enabled and not spec.provision.roles  # Molecule converges the role, not labkit
    assert "reused: molecule/default/tests/ (testinfra tests, unchanged)" in r.output
    assert "molecule test -s labkit" in r.output and "driver, platforms" in r.output


def test_the_scenario_passes_molecules_schema_and_yamllint(role):
    jsonschema = pytest.importorskip("jsonschema")
    from yamllint import config, linter

    sc = molecule.plan(role, "labkit")
    molecule.write(sc)
    schema = json.loads((Path(__import__("molecule").__file__).parent / "data" / "molecule.json").read_text())
    jsonschema.validate(yaml.safe_load(sc.files["molecule.yml"]), schema)
    conf = config.YamlLintConfig(file=str(ROOT / ".yamllint"))  # ansible-lint's rules of yamllint
    for rel, text in sc.files.items():
        if rel.endswith(".yml"):
            problems = list(linter.run(text, conf))
            assert not problems, (rel, [str(p) for p in problems])


def test_init_molecule_for_a_role_without_a_scenario_writes_converge_and_verify(tmp_path, monkeypatch):
    r = tmp_path / "ansible-role-thing"
    (r / "tasks").mkdir(parents=True)
    (r / "tasks" / "main.yml").write_text("---\n- name: Noop\n  ansible.builtin.meta: noop\n")
    r_ = CliRunner().invoke(main, ["init", "--molecule", "--role", str(r)])
    assert r_.exit_code == 0, r_.output
    sc = r / "molecule" / "default"
    cfg = yaml.safe_load((sc / "molecule.yml").read_text())
    assert cfg["ansible"]["playbooks"]["converge"] == "converge.yml" and (sc / "converge.yml").is_file()
    assert cfg["verifier"] == {"name": "ansible"} and (sc / "verify.yml").is_file()
    assert cfg["role_name_check"] == 1  # no Galaxy name in meta: Molecule's prerun would refuse it
    assert "dependency" not in cfg["scenario"]["test_sequence"]
    assert load_lab(sc / "lab.yml").name == "thing"
    assert f"cd {r} && molecule test`" in r_.output


def test_init_molecule_refuses_an_existing_default_naming_the_way_out(role, monkeypatch):
    monkeypatch.chdir(role)
    before = (role / "molecule" / "default" / "molecule.yml").read_text()
    r = init()
    assert r.exit_code == 2 and "molecule/default/molecule.yml exists" in r.output
    assert "labkit init --molecule labkit" in r.output
    assert (role / "molecule" / "default" / "molecule.yml").read_text() == before


def test_init_molecule_force_keeps_the_roles_own_playbooks_and_tests(role, monkeypatch):
    monkeypatch.chdir(role)
    conv = (role / "molecule" / "default" / "converge.yml").read_text()
    r = init("--force")
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load((role / "molecule" / "default" / "molecule.yml").read_text())
    assert cfg["ansible"]["playbooks"]["converge"] == "converge.yml" and cfg["verifier"]["directory"] == "tests"
    assert (role / "molecule" / "default" / "converge.yml").read_text() == conv
    assert (role / "molecule" / "default" / "tests" / "test_default.py").is_file()


@pytest.mark.parametrize("args, words", [
    (["bad name"], "scenario name 'bad name'"),
    (["--role", "/nonexistent-role"], "not an Ansible role"),
])
def test_init_molecule_bad_input(args, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "main.yml").write_text("---\n[]\n")
    r = init(*args)
    assert r.exit_code == 2 and words in r.output, r.output
    assert not (tmp_path / "molecule").exists()


def test_init_molecule_in_a_folder_that_is_no_role(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = init()
    assert r.exit_code == 2 and "not an Ansible role" in r.output and "--role DIR" in r.output
    assert list(tmp_path.iterdir()) == []


def test_role_without_molecule_flag_is_refused(tmp_path):
    r = CliRunner().invoke(main, ["init", "--role", str(tmp_path)])
    assert r.exit_code == 2 and "--molecule" in r.output


def test_a_failure_while_writing_leaves_nothing_half_made(role, monkeypatch):
    def boom(_path):
        raise OSError("disk full")

    monkeypatch.setattr(molecule, "load_lab", boom)
    sc = molecule.plan(role, "labkit")
    with pytest.raises(OSError):
        molecule.write(sc)
    assert sorted(p.name for p in (role / "molecule").iterdir()) == ["default"]


def test_lab_names_fit_labkits_rule():
    assert molecule.lab_name("webnote", "default") == "webnote"
    assert molecule.lab_name("Nginx_Proxy", "labkit") == "nginx-proxy-labkit"
    assert molecule.lab_name("123", "x") == "x"
    assert molecule.lab_name("a-very-long-role-name-indeed", "default") == "a-very-long-role-nam"
    assert molecule.galaxy_name(WEBNOTE) == ("labkit_tests", "webnote")
