#!/usr/bin/env python3
"""labkit benchmarks, side by side with the raw tools it drives, in one run on one machine.

    .venv/bin/python bench/run.py                 # everything (several minutes; boots 2 VMs)
    .venv/bin/python bench/run.py --only a,d,e    # some of: a b c d e f g h

(a) the default lab's containers: a plain `docker` shell loop vs `labkit up` (containers only)
(b) one VM: plain `vagrant up` of the same box vs `labkit up` of the VM
(c) `molecule create` + `converge` (molecule/default) vs `labkit up` of the same containers
(d) the no-op re-run of `labkit up` vs its first run
(e) scale: 1, 10, 40 students (containers only): the raw floor (the raw script, 4 students at a
    time), labkit's first run, no-op re-run and down, the machine's CPU and memory; at 40 also
    one package
(f) engines: create-to-ready of a Debian 12 container per engine (docker, podman, lxc), side by
    side, as `labkit up` measures each (the engine's own timestamps; LXC: folder made -> init)
(g) the student door (bench/door.py): 40 students' shells opened at once and typing, on loopback:
    raw `docker exec -it`, a plain sshd with a ForceCommand, labkit serve's SSH gate and web page
(h) during class (bench/classroom.py): `labkit reset` of a container and of the VM, checkpoint
    save and restore, grading 40 students, each beside the raw operation (docker rm/run/commit,
    vagrant destroy/up, virsh snapshot-create-as/revert, one plain pytest over the inventory)

Results: bench/results/<time>.json (+ latest.json) and a chart, with the machine described.
Repetitions give median and spread; ratios are labkit / raw.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
LABKIT = str(BIN / "labkit")
ENV = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")


def sh(cmd, check=True, cwd=None, env=None, quiet=True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=quiet, text=True, cwd=cwd, env=env or ENV)
    if check and p.returncode != 0:
        raise SystemExit(f"failed: {cmd}\n{p.stdout[-3000:] if p.stdout else ''}\n{p.stderr[-3000:] if p.stderr else ''}")
    return p


def timed(cmd, **kw) -> float:
    t0 = time.monotonic()
    sh(cmd, **kw)
    return time.monotonic() - t0


def stats(xs: list[float]) -> dict:
    return {"runs": [round(x, 2) for x in xs], "median": round(statistics.median(xs), 2),
            "min": round(min(xs), 2), "max": round(max(xs), 2)}


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    docker = sh("docker version --format '{{.Server.Version}}'", check=False).stdout.strip()
    sys.path.insert(0, str(ROOT))
    from labkit.vm.virt import detect_accel

    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(os.sysconf("SC_PAGE_SIZE") *
            os.sysconf("SC_PHYS_PAGES") / 2**30, 1), "kernel": platform.release(), "docker": docker,
            "python": platform.python_version(), "vm_accel": detect_accel().mode}


def lab_file(d: Path, name: str, students, containers=("debian:11", "debian:12", "debian:13", "busybox"),
             vm=False, packages=("less",)) -> Path:
    f = d / f"{name}.yml"
    f.write_text(json.dumps({"name": name, "students": students, "containers": list(containers),
                             "vm": {"enabled": vm}, "provision": {"packages": list(packages)}}))
    return f


def bench_containers(d: Path, reps: int, res: dict) -> None:
    """(a) and (d)."""
    lf = lab_file(d, "bench", ["b1"])
    raw, lab, noop, full = [], [], [], []
    for _ in range(reps):
        sh(f"bash {ROOT}/bench/raw_containers.sh down bench b1")
        raw.append(timed(f"bash {ROOT}/bench/raw_containers.sh up bench b1 less"))
        sh(f"bash {ROOT}/bench/raw_containers.sh down bench b1")
        sh([LABKIT, "down", "-f", str(lf)])
        lab.append(timed([LABKIT, "up", "-f", str(lf), "--no-facts"]))
        noop.append(timed([LABKIT, "up", "-f", str(lf), "--no-facts"]))
        full.append(timed([LABKIT, "up", "-f", str(lf), "--no-facts", "--full"]))
    sh([LABKIT, "down", "-f", str(lf)])
    res["a_containers"] = {"raw_docker_loop": stats(raw), "labkit_up": stats(lab),
                           "ratio": round(statistics.median(lab) / statistics.median(raw), 2)}
    res["d_noop_rerun"] = {"first_run": stats(lab), "noop_rerun": stats(noop),
                           "ratio": round(statistics.median(noop) / statistics.median(lab), 2),
                           # the playbook run anyway (what every re-run cost before the fast path)
                           "full_rerun": stats(full),
                           "full_ratio": round(statistics.median(full) / statistics.median(lab), 2)}


def bench_vm(d: Path, res: dict) -> None:
    """(b): one VM, raw vagrant up vs labkit up (VM only). One repetition each: minutes under TCG."""
    sys.path.insert(0, str(ROOT))
    from labkit.vm import virt

    accel = virt.detect_accel()
    work = d / "raw-vagrant"
    venv = raw_vagrantfile(work)
    raw = timed("vagrant up", cwd=work, env=venv)
    sh("vagrant destroy -f", cwd=work, env=venv)
    lf = lab_file(d, "benchvm", ["b1"], containers=(), vm=True, packages=())
    sh([LABKIT, "down", "-f", str(lf)])
    lab = timed([LABKIT, "up", "-f", str(lf), "--no-facts"])
    phases = vm_phases("benchvm")
    phases["timeline"] = vm_timeline("benchvm", "b1")
    noop = timed([LABKIT, "up", "-f", str(lf), "--no-facts"])
    sh([LABKIT, "down", "-f", str(lf)])
    res["b_vm"] = {"accel": accel.mode, "raw_vagrant_up": stats([raw]), "labkit_up": stats([lab]),
                   "labkit_noop_rerun": stats([noop]), "ratio": round(lab / raw, 2),
                   # labkit_vagrant's own clock: `vagrant up` to the domain's address, then SSH with the
                   # VM's own key; the guest's side from systemd in the VM (boot to sshd listening)
                   "labkit_vm_phases": phases,
                   "note": "labkit also provisions the VM (student_env) and waits for SSH with the VM's own "
                           "key; raw vagrant up boots and waits for SSH, swapping Vagrant's key itself"}


def raw_vagrantfile(work: Path) -> dict:
    """A plain Vagrantfile of labkit's box in ``work`` (the raw side of the VM benchmarks);
    the environment to run its `vagrant` in."""
    sys.path.insert(0, str(ROOT))
    from labkit import paths
    from labkit.vm import virt

    accel = virt.detect_accel()
    emulator = f'libvirt.emulator_path = "{virt.tcg_emulator_wrapper()}"' if accel.emulated else ""
    work.mkdir(parents=True, exist_ok=True)
    (work / "Vagrantfile").write_text(f"""
Vagrant.configure("2") do |config|
  config.vm.box = "labkit/debian12"
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.boot_timeout = 900
  config.vm.define "vm" do |m|
    m.vm.provider :libvirt do |libvirt|
      libvirt.default_prefix = "bench-raw-"
      libvirt.driver = "{accel.mode}"
      libvirt.memory = 512
      libvirt.cpus = 1
      libvirt.graphics_type = "none"
      libvirt.management_network_name = "labkit"
      libvirt.management_network_address = "192.168.123.0/24"
      {emulator}
    end
  end
end
""")
    return dict(ENV, VAGRANT_HOME=str(paths.vagrant_home()), LIBVIRT_DEFAULT_URI="qemu:///system",
                VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_DEFAULT_PROVIDER="libvirt")


def vm_phases(lab: str) -> dict:
    """The VM task's phases in the lab's latest run (labkit_vagrant's ``phases`` result)."""
    from labkit.paths import lab_dir

    art = lab_dir(lab) / "runner" / "artifacts"
    runs = sorted(art.iterdir(), key=lambda d: d.stat().st_mtime) if art.is_dir() else []
    for f in (runs[-1] / "job_events").glob("*.json") if runs else []:
        res = ((json.loads(f.read_text()).get("event_data") or {}).get("res") or {})
        if isinstance(res, dict) and res.get("phases"):
            return {**res["phases"], "to_ssh_seconds": res.get("seconds")}
    return {}


def vm_timeline(lab: str, student: str) -> dict:
    """Where the VM's seconds to SSH go, from the clocks that saw them: `vagrant up` started
    (labkit's line in the Vagrant log, to the second), QEMU started (libvirt's domain log, to
    the millisecond), and the guest's own journal (seconds since its kernel started: sshd
    listening, the DHCP lease). The guest's clock starts a moment after QEMU's (the firmware
    and the boot loader, about 1 s under TCG), counted here in the guest's time."""
    import re
    from datetime import datetime

    from labkit import names
    from labkit.paths import lab_dir

    work = lab_dir(lab) / "vagrant" / student
    domain = names.vm(lab, student)
    out: dict = {}
    try:
        started = [ln for ln in (work / "vagrant.log").read_text().splitlines() if "==== labkit: vagrant up" in ln]
        t_vagrant = datetime.strptime(started[-1].split("(", 1)[1].split(")")[0], "%a %b %d %H:%M:%S %Y").timestamp()
        qemu = [ln for ln in Path(f"/var/log/libvirt/qemu/{domain}.log").read_text().splitlines()
                if ": starting up " in ln]
        t_qemu = datetime.strptime(qemu[-1][:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
        out["vagrant_to_qemu_start"] = round(t_qemu - t_vagrant, 1)
        conf = dict(ln.split(None, 1) for ln in (work / "ssh_config").read_text().splitlines()
                    if ln.strip() and not ln.lstrip().startswith("#") and len(ln.split(None, 1)) == 2)
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR", "-i", conf["IdentityFile"].strip(), f"vagrant@{conf['HostName'].strip()}"]
        journal = sh(ssh + ["sudo journalctl -b -o short-monotonic --no-pager"], check=False).stdout
        analyze = sh(ssh + ["systemd-analyze"], check=False).stdout

        def at(pattern: str) -> float | None:
            m = next((re.match(r"\[\s*([0-9.]+)\]", ln) for ln in journal.splitlines() if re.search(pattern, ln)), None)
            return float(m.group(1)) if m else None

        out["guest_kernel_to_init"] = at(r"Run /init as init process")
        out["guest_kernel_to_root_mounted"] = at(r"EXT4-fs \(vda1\): mounted")
        out["guest_kernel_to_sshd_listening"] = at(r"sshd\[\d+\]: Server listening on 0.0.0.0")
        out["guest_kernel_to_link_up"] = at(r" (en|eth)\S*: Link UP$")
        out["guest_kernel_to_dhcp_lease"] = at(r"DHCPv4 address")
        out["systemd_analyze"] = analyze.strip().splitlines()[0] if analyze.strip() else None
    except (OSError, IndexError, ValueError, KeyError) as e:  # a timeline is a help, never a failure
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def bench_molecule(d: Path, reps: int, res: dict) -> None:
    """(c): molecule create + converge of molecule/default vs labkit up of the same containers."""
    lf = lab_file(d, "benchmol", ["m2"], packages=("less",))
    mol, lab = [], []
    for _ in range(reps):
        sh("molecule destroy -s default", cwd=ROOT, check=False)
        mol.append(timed("molecule create -s default && molecule converge -s default", cwd=ROOT))
        sh("molecule destroy -s default", cwd=ROOT, check=False)
        sh([LABKIT, "down", "-f", str(lf)])
        lab.append(timed([LABKIT, "up", "-f", str(lf), "--no-facts"]))
        sh([LABKIT, "down", "-f", str(lf)])
    res["c_molecule"] = {"molecule_create_converge": stats(mol), "labkit_up": stats(lab),
                         "speedup": round(statistics.median(mol) / statistics.median(lab), 2)}


def cpu_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)  # idle + iowait
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def measured(cmd, **kw) -> dict:
    """Wall time, the machine's busy CPU seconds and mean use of all its cores, and the memory
    the run left in use (MemAvailable before - after) of one command."""
    mem, cpu, t0 = mem_available(), cpu_busy(), time.monotonic()
    sh(cmd, **kw)
    secs, busy = time.monotonic() - t0, cpu_busy() - cpu
    return {"seconds": round(secs, 1), "cpu_seconds": round(busy, 1),
            "cpu_use": round(busy / secs / (os.cpu_count() or 1), 2),
            "memory_mib": round((mem - mem_available()) / 2**20)}


def raw_scale(n: int, at_once: int = 4) -> dict:
    """The raw floor of (e): bench/raw_containers.sh for n students, ``at_once`` of them at a
    time, no packages (the same images, networks, limits, hardening, account and motd)."""
    students = [f"r{i:02d}" for i in range(1, n + 1)]
    script = f"bash {ROOT}/bench/raw_containers.sh"

    def down() -> None:
        sh(" ; ".join(f"{script} down rawscale {s}" for s in students), check=False)

    down()
    batches = [students[i:i + at_once] for i in range(0, n, at_once)]
    cmd = " ; ".join("(" + " & ".join(f"{script} up rawscale {s}" for s in b) + " & wait)" for b in batches)
    try:
        return measured(cmd)
    finally:
        down()


def bench_scale(d: Path, sizes: list[int], res: dict) -> None:
    """(e): containers only, the default lab's four distros, no packages (no mirror load): per
    size the raw floor (the raw script, 4 students at a time) and labkit's first run, no-op
    re-run and down, with the machine's CPU and memory; at the largest size also one package
    (less, through each distro's package manager)."""
    out = {}
    for n in sizes:
        students = [f"s{i:02d}" for i in range(1, n + 1)]
        lf = lab_file(d, f"scale{n}", students, packages=())
        sh([LABKIT, "down", "-f", str(lf)])
        raw = raw_scale(n)
        up = measured([LABKIT, "up", "-f", str(lf), "--no-facts"])
        noop = measured([LABKIT, "up", "-f", str(lf), "--no-facts"])
        prof = profile(f"scale{n}", last=1)
        down = measured([LABKIT, "down", "-f", str(lf)])
        row = {"students": n, "containers": n * 4, "raw_floor": raw, "labkit_up": up,
               "ratio_to_raw": round(up["seconds"] / raw["seconds"], 2), "noop_rerun": noop,
               "noop_ratio": round(noop["seconds"] / up["seconds"], 2), "down": down,
               "seconds": up["seconds"], "students_per_minute": round(n / up["seconds"] * 60, 1),
               "server_memory_mib": up["memory_mib"], "profile": prof}
        if n == max(sizes):
            lf1 = lab_file(d, f"scale{n}pkg", students, packages=("less",))
            sh([LABKIT, "down", "-f", str(lf1)])
            row["one_package"] = measured([LABKIT, "up", "-f", str(lf1), "--no-facts"])
            row["one_package"]["profile"] = profile(f"scale{n}pkg", last=1)
            sh([LABKIT, "down", "-f", str(lf1)])
        out[str(n)] = row
        print(f"(e) {n} students: raw {raw['seconds']} s, labkit {up['seconds']} s, no-op {noop['seconds']} s, "
              f"down {down['seconds']} s" + (f", one package {row['one_package']['seconds']} s"
                                               if "one_package" in row else ""), flush=True)
    res["e_scale"] = out


def bench_engines(d: Path, reps: int, res: dict) -> None:
    """(f): one student, a Debian 12 container on each engine this machine has, no packages."""
    sys.path.insert(0, str(ROOT))
    from labkit.observe import measure

    engines = ["docker"] + [e for e, tool in (("podman", "podman"), ("lxc", "lxc-start")) if shutil.which(tool)]
    f = d / "benchengines.yml"
    f.write_text(json.dumps({"name": "benchengines", "students": ["e1"], "vm": {"enabled": False},
                             "containers": [{"distro": "debian:12", "engine": e} for e in engines],
                             "provision": {"packages": []}}))
    ready: dict[str, list[float]] = {e: [] for e in engines}
    up = []
    for _ in range(reps):
        sh([LABKIT, "down", "-f", str(f)])
        up.append(timed([LABKIT, "up", "-f", str(f), "--no-facts"]))
        for row in measure.load("benchengines").values():
            eng = row.get("engine") or "docker"
            if eng in ready and row.get("ready_seconds") is not None:
                ready[eng].append(float(row["ready_seconds"]))
    sh([LABKIT, "down", "-f", str(f)])
    res["f_engines"] = {"labkit_up": stats(up), "engines": engines,
                        "create_to_ready": {e: stats(v) for e, v in ready.items() if v},
                        "how": {"docker": "engine: created -> started", "podman": "engine: created -> started",
                                "lxc": "lab_lxc: folder made (root file system copied) -> init started"}}


def profile(lab: str, playbook: str = "up.yml", last: int = 2) -> list[dict]:
    """Where the time goes in labkit's most recent runs of ``playbook`` for ``lab``: per task,
    the summed host time, from ansible-runner's job events (artifacts of the runs)."""
    import collections
    from datetime import datetime

    from labkit.paths import lab_dir

    art = lab_dir(lab) / "runner" / "artifacts"
    runs = sorted((d for d in art.iterdir() if playbook in (d / "command").read_text(errors="ignore")),
                  key=lambda d: d.stat().st_mtime)[-last:] if art.is_dir() else []
    out = []
    for d in runs:
        per_task, count, stamps = collections.Counter(), collections.Counter(), []
        for f in (d / "job_events").glob("*.json"):
            e = json.loads(f.read_text())
            ed = e.get("event_data") or {}
            if e.get("created"):
                stamps.append(datetime.fromisoformat(e["created"]))
            if e.get("event", "").startswith("runner_on_") and "duration" in ed:
                per_task[ed.get("task", "?")] += ed["duration"]
                count[ed.get("task", "?")] += 1
        out.append({"run": d.name, "playbook_seconds": round((max(stamps) - min(stamps)).total_seconds(), 2)
                    if stamps else None,
                    "top_tasks": [{"task": t, "host_seconds": round(v, 2), "hosts": count[t]}
                                  for t, v in per_task.most_common(8)]})
    return out


def chart(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = res.get("f_engines", {}).get("create_to_ready", {})
    fig, axes = plt.subplots(1, 3 if engines else 2, figsize=(16 if engines else 11, 4))
    pairs = []
    if "a_containers" in res:
        pairs.append(("containers\nraw loop / labkit", res["a_containers"]["raw_docker_loop"]["median"],
                      res["a_containers"]["labkit_up"]["median"]))
    if "b_vm" in res:
        pairs.append(("VM\nvagrant up / labkit", res["b_vm"]["raw_vagrant_up"]["median"], res["b_vm"]["labkit_up"]["median"]))
    if "c_molecule" in res:
        pairs.append(("molecule create+converge\n/ labkit", res["c_molecule"]["molecule_create_converge"]["median"],
                      res["c_molecule"]["labkit_up"]["median"]))
    if "d_noop_rerun" in res:
        pairs.append(("labkit first run\n/ no-op re-run", res["d_noop_rerun"]["first_run"]["median"],
                      res["d_noop_rerun"]["noop_rerun"]["median"]))
    ax = axes[0]
    for i, (_label, a, b) in enumerate(pairs):
        ax.bar(i - 0.2, a, 0.4, color="#999999", label="raw tool / first" if i == 0 else None)
        ax.bar(i + 0.2, b, 0.4, color="#2a7ab8", label="labkit" if i == 0 else None)
    ax.set_xticks(range(len(pairs)), [p[0] for p in pairs], fontsize=8)
    ax.set_ylabel("seconds (median)")
    ax.set_title("labkit vs the raw tools")
    ax.legend(fontsize=8)
    ax = axes[1]
    if "e_scale" in res:
        rows = list(res["e_scale"].values())
        ax.plot([r["students"] for r in rows], [r["seconds"] for r in rows], "o-", color="#2a7ab8")
        for r in rows:
            ax.annotate(f"{r['students_per_minute']}/min", (r["students"], r["seconds"]), fontsize=8)
        ax.set_xlabel("students (4 containers each)")
        ax.set_ylabel("labkit up, seconds")
        ax.set_title("scale: containers only")
    if engines:  # (f): create-to-ready per engine, side by side (median, with min-max)
        ax = axes[2]
        names = list(engines)
        med = [engines[e]["median"] for e in names]
        err = [[engines[e]["median"] - engines[e]["min"] for e in names],
               [engines[e]["max"] - engines[e]["median"] for e in names]]
        ax.bar(names, med, yerr=err, color="#2a7ab8", capsize=4)
        ax.set_ylabel("create-to-ready, seconds (median, min-max)")
        ax.set_title("one Debian 12 container per engine")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="a,b,c,d,e,f,g,h", help="which benchmarks: a,b,c,d,e,f,g,h")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scale", default="1,10,40")
    args = ap.parse_args()
    only = set(args.only.split(","))
    res: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "reps": args.reps,
                 # the machine is shared: its load says how comparable two runs' absolute times are
                 "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
    failed = None
    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as tmp:
        d = Path(tmp)
        try:
            if only & {"a", "d"}:
                bench_containers(d, args.reps, res)
            if "c" in only:
                bench_molecule(d, args.reps, res)
            if "e" in only:
                bench_scale(d, [int(x) for x in args.scale.split(",")], res)
            if "f" in only:
                bench_engines(d, args.reps, res)
            if "b" in only and shutil.which("vagrant"):
                bench_vm(d, res)
            if "g" in only:
                sys.path.insert(0, str(ROOT / "bench"))
                from door import bench_door

                bench_door(d, res)
            if "h" in only:
                sys.path.insert(0, str(ROOT / "bench"))
                from classroom import bench_classroom

                bench_classroom(d, res)
        except SystemExit as e:  # a command failed: keep what was measured, and say what failed
            failed = str(e.code)
            res["failed"] = failed[:4000]
    sys.path.insert(0, str(ROOT))
    if only & {"a", "d"} and "a_containers" in res:  # the first run and the no-op re-run of the last repetition
        res["profile_containers"] = {
            "note": "summed host seconds per task; on 2 cores each module run in a container costs "
                    "0.6-1.2 s, and ansible-runner + ansible-playbook start in about 3 s",
            "runs": profile("bench")}
    res["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(res, indent=2))
    (RESULTS / "latest.json").write_text(json.dumps(res, indent=2))
    chart(res, RESULTS / "latest.png")
    print(json.dumps(res, indent=2))
    print(f"results: {out}, chart: {RESULTS / 'latest.png'}")
    if failed:
        raise SystemExit(f"benchmark failed (results so far kept in {out}):\n{failed}")


if __name__ == "__main__":
    main()
