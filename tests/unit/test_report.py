"""The report's pure part: wording of numbers, bar labels, the VMs' boot notes, boots at once,
the pass/fail summary, and the chart's labels and scales (drawn, no engine)."""
import re
from types import SimpleNamespace

import pytest

from labkit.observe import measure
from labkit.observe import report as rep
from labkit.observe.facts import HostFacts


@pytest.mark.parametrize(("value", "text"), [
    (None, "not measured"), (0.31, "0.3 s"), (9.94, "9.9 s"), (76.9, "77 s"), (191.4, "191 s")])
def test_seconds(value, text):
    assert rep.fmt_seconds(value) == text


@pytest.mark.parametrize(("value", "text"), [
    (None, "not measured"), (53_248, "52 KiB"), (704_512, "688 KiB"), (2**20, "1.0 MiB"),
    (43_622_400, "41.6 MiB"), (653_717_504, "623 MiB")])
def test_memory_under_one_mib_reads_in_kib_never_zero(value, text):
    assert rep.fmt_memory(value) == text


@pytest.mark.parametrize(("value", "text"), [
    (None, "not measured"), (512_000, "512 kB"), (1_985_607, "2.0 MB"), (648_937_472, "649 MB")])
def test_disk(value, text):
    assert rep.fmt_disk(value) == text


@pytest.mark.parametrize(("host", "student", "label"), [
    ("labkit-demo-s01-debian11", "s01", "s01 debian11"),
    ("labkit-demo-s01-vm", "s01", "s01 vm"),
    ("labkit-my-lab-ann-lee-busybox", "ann-lee", "ann-lee busybox"),
])
def test_bar_labels_name_the_student_and_host(host, student, label):
    assert rep.bar_label(HostFacts(host, "container", student)) == label


def test_boot_note_says_accelerator_parallel_boots_and_cores():
    assert rep.boot_note({"accel": "qemu", "boots_at_once": 3, "server_cores": 2, "vm_cpus": 1}) == \
        "QEMU emulation (TCG, no KVM), 3 VMs booted at once on a 2-core lab server (1 vCPU each)"
    assert rep.boot_note({"accel": "qemu", "boots_at_once": 3, "server_cores": 2}) == \
        "QEMU emulation (TCG, no KVM), 3 VMs booted at once on a 2-core lab server"
    assert rep.boot_note({"accel": "kvm", "boots_at_once": 1, "server_cores": 16, "server_vms": 1}) == \
        "KVM, 1 VM booted at once (alone) on a 16-core lab server"
    assert rep.boot_note({"accel": "kvm", "boots_at_once": 1, "server_cores": 16, "vm_cpus": 2}) == \
        "KVM, 1 VM booted at once on a 16-core lab server (2 vCPUs)"
    # other labs' VMs on the same cores are said; "alone" only when it was
    assert rep.boot_note({"accel": "qemu", "boots_at_once": 1, "server_cores": 2, "server_vms": 4, "vm_cpus": 1}) == \
        ("QEMU emulation (TCG, no KVM), 1 VM booted at once on a 2-core lab server (1 vCPU); "
         "4 VMs were running there when it came up")
    assert rep.boot_note({"accel": "qemu", "boots_at_once": 3, "server_cores": 2, "server_vms": 3}) == \
        "QEMU emulation (TCG, no KVM), 3 VMs booted at once on a 2-core lab server"
    # a VM measured before labkit recorded these: said, not guessed
    assert rep.boot_note({}) == \
        "accelerator not recorded, parallel boots not recorded (lab server's cores not recorded)"


def test_fact_span():
    assert rep.fact_span([f"K{i}" for i in range(1, 13)]) == "K1-K12"
    assert rep.fact_span(["K1", "K3", "K4"]) == "K1, K3, K4"
    assert rep.fact_span(["K3"]) == "K3"


def test_boots_at_once_counts_overlapping_boots():
    iv = {"a": (0, 180), "b": (2, 185), "c": (5, 190), "d": (300, 360)}
    assert [measure.boots_at_once(iv, h) for h in "abcd"] == [3, 3, 3, 1]
    # a chain where never more than two boot together
    chain = {"a": (0, 10), "b": (5, 15), "c": (12, 20)}
    assert [measure.boots_at_once(chain, h) for h in "abc"] == [2, 2, 2]
    assert measure.boots_at_once(chain, "zz") is None


def _vagrant_event(host, end, seconds, changed=True, status="running", action="labkit_vagrant"):
    # the shape of ansible-runner's runner_on_ok event for the lab_vm role's task (seen in job_events)
    return {"event": "runner_on_ok", "event_data": {
        "host": host, "task_action": action, "start": "2026-11-29T01:45:37.462920+00:00", "end": end,
        "res": {"changed": changed, "status": status, "seconds": seconds}}}


def test_vm_boots_reads_the_runs_events_and_passes_them_on():
    seen, guests = [], iter([3, 4, 4])
    boots = measure.VmBoots(seen.append, guests=lambda: next(guests))
    events = [
        _vagrant_event("labkit-c-a-vm", "2026-11-29T01:48:00+00:00", 180.0),
        _vagrant_event("labkit-c-b-vm", "2026-11-29T01:48:05+00:00", 184.0),
        _vagrant_event("labkit-c-c-vm", "2026-11-29T01:48:09.5+00:00", 186.5),
        _vagrant_event("labkit-c-d-vm", "2026-11-29T01:48:09+00:00", 0.0, changed=False),  # fast path: no boot
        _vagrant_event("labkit-c-e-vm", "2026-11-29T01:48:09+00:00", 12.0, status="not_created"),  # a destroy
        _vagrant_event("labkit-c-a-debian12", "2026-11-29T01:48:09+00:00", 3.0, action="community.docker.x"),
        {"event": "playbook_on_stats", "event_data": {}},
    ]
    for e in events:
        boots(e)
    assert seen == events
    assert set(boots.intervals) == {"labkit-c-a-vm", "labkit-c-b-vm", "labkit-c-c-vm"}
    a0, a1 = boots.intervals["labkit-c-a-vm"]
    assert a1 - a0 == pytest.approx(180.0)
    assert [boots.at_once(f"labkit-c-{x}-vm") for x in "abcd"] == [3, 3, 3, None]
    assert boots.guests_at_end == {"labkit-c-a-vm": 3, "labkit-c-b-vm": 4, "labkit-c-c-vm": 4}


def _lab(students=("kim", "lee"), vm_note=None, busybox_mem=53_248):
    facts = [HostFacts("lab-server", "server", kernel_release="6.18", os_id="debian", os_version="12")]
    meas = {}
    for s in students:
        for d, mem in (("busybox", busybox_mem), ("debian12", 43_622_400)):
            name = f"labkit-c-{s}-{d}"
            facts.append(HostFacts(name, "container", s, kernel_release="6.18", same_kernel=True, same_boot=True))
            meas[name] = {"ready_seconds": 1.5, "memory_bytes": mem, "disk_bytes": 1_985_607}
        name = f"labkit-c-{s}-vm"
        facts.append(HostFacts(name, "vm", s, kernel_release="6.1.0", same_kernel=False, same_boot=False))
        meas[name] = {"ready_seconds": 190.0, "memory_bytes": 800_000_000, "disk_bytes": 648_937_472,
                      **(vm_note or {"accel": "qemu", "boots_at_once": len(students), "server_cores": 2})}
    return facts, meas


def _checks(*outcomes):
    return [SimpleNamespace(fact=f, host=h, outcome=o, detail="d") for f, h, o in outcomes]


ALL_PASS = _checks(("K1", "labkit-c-kim-busybox", "passed"), ("K1", "labkit-c-lee-busybox", "passed"),
                   ("K3", "labkit-c-kim-vm", "passed"))


def test_rows_order_students_vm_first_and_server_reads_na_never_zero():
    facts, meas = _lab()
    data = rep.build("c", facts, meas, ALL_PASS, [f.host for f in facts if f.role != "server"])
    assert [r["label"] for r in data["hosts"]] == [
        "lab-server", "kim vm", "kim busybox", "kim debian12", "lee vm", "lee busybox", "lee debian12"]
    server = data["hosts"][0]
    assert (server["ready"], server["memory"], server["disk"]) == ("n/a", "n/a", "n/a")
    assert server["memory_mib"] is None and server["disk_mb"] is None  # JSON: no made-up 0.0
    bb = data["hosts"][2]
    assert bb["memory"] == "52 KiB" and bb["memory_mib"] == pytest.approx(0.051, abs=1e-3)
    vm = data["hosts"][1]
    assert vm["accel"] == "qemu" and vm["boots_at_once"] == 2 and vm["server_cores"] == 2


def test_summary_pass_names_facts_checks_hosts_and_vm_boots():
    facts, meas = _lab()
    s = rep.build("c", facts, meas, ALL_PASS, [f.host for f in facts if f.role != "server"])["summary"]
    assert s["verdict"] == "pass"
    assert s["headline"] == "PASS: all 2 facts hold (3 checks passed); 6 of 6 hosts up"
    assert s["lines"][0] == "Facts K1, K3: 2 hold, 0 failed; checks: 3 passed, 0 failed, 0 skipped"
    assert s["lines"][1] == "Hosts: 6 of 6 hosts up (2 students: 4 containers, 2 VMs)"
    assert s["lines"][2] == ("VM start (vagrant up to SSH): QEMU emulation (TCG, no KVM), "
                             "2 VMs booted at once on a 2-core lab server")


def test_summary_fails_on_a_failed_check_or_a_missing_host():
    facts, meas = _lab()
    expected = [f.host for f in facts if f.role != "server"]
    failed = ALL_PASS + _checks(("K2", "labkit-c-lee-busybox", "failed"))
    s = rep.build("c", facts, meas, failed, expected)["summary"]
    assert s["verdict"] == "fail" and s["headline"].startswith("FAIL: K2 failed (1 of 4 checks)")
    s = rep.build("c", facts, meas, ALL_PASS, [*expected, "labkit-c-lee-debian13"])["summary"]
    assert s["verdict"] == "fail"
    assert s["headline"] == "FAIL: 1 host missing (labkit-c-lee-debian13); 6 of 7 hosts up"


def test_skipped_checks_and_no_checks_are_never_a_pass():
    facts, meas = _lab()
    expected = [f.host for f in facts if f.role != "server"]
    skipped = ALL_PASS + _checks(("K11", "labkit-c-kim-vm", "skipped"))
    s = rep.build("c", facts, meas, skipped, expected)["summary"]
    assert s["verdict"] == "unchecked"
    assert s["headline"].startswith("INCOMPLETE: 2 of 3 facts hold, K11 only skipped")
    s = rep.build("c", facts, meas, None, expected)["summary"]
    assert s["verdict"] == "unchecked" and s["headline"].startswith("NOT CHECKED")


def test_vm_notes_name_whose_vms_when_they_booted_differently():
    facts, meas = _lab()
    meas["labkit-c-lee-vm"].update(boots_at_once=1, server_vms=1)
    notes = rep.build("c", facts, meas)["summary"]["vm_boot"]
    assert notes == ["kim: QEMU emulation (TCG, no KVM), 2 VMs booted at once on a 2-core lab server",
                     "lee: QEMU emulation (TCG, no KVM), 1 VM booted at once (alone) on a 2-core lab server"]


def test_chart_svg_keeps_labels_as_text_with_log_scales_said():
    facts, meas = _lab()
    data = rep.build("c", facts, meas, ALL_PASS)
    svg = rep.chart_svg(data)
    assert svg.startswith("<svg ") and "max-width:100%" in svg
    for i, label in enumerate(["kim vm", "kim busybox", "kim debian12", "lee vm", "lee busybox", "lee debian12"]):
        assert f'<g id="bar-label-{i}">' in svg and f">{label}</text>" in svg
    assert svg.count("log scale</text>") == 3
    assert "VM start: QEMU emulation (TCG, no KVM), 2 VMs booted at once on a 2-core lab server</text>" in svg
    assert ">190 s (TCG)</text>" in svg and ">52 KiB</text>" in svg
    assert rep.chart_png(data).startswith(b"\x89PNG")


def test_html_puts_the_summary_first_and_keeps_host_names_on_one_line():
    facts, meas = _lab()
    data = rep.build("c", facts, meas, ALL_PASS)
    page = rep.html_page(data, rep.chart_svg(data))
    assert page.index('id="summary"') < page.index('id="chart"') < page.index('id="facts"')
    assert "#facts td.host" in page and "white-space: nowrap" in page
    assert "<td class='host'>labkit-c-kim-vm</td>" in page
    assert not re.search(r'(src|href)="(?!#)', page) and "url(http" not in page  # self-contained


def test_k9_detail_reads_busybox_in_kib():
    from labkit.observe import checks

    m = {"memory_bytes": 364_544, "memory_how": "cgroup", "disk_bytes": 1_985_607, "disk_how": "image size"}
    assert checks.k9(HostFacts("labkit-demo-s01-busybox", "container", "s01"), m) == \
        "memory 356 KiB (cgroup), disk 2.0 MB (image size)"
