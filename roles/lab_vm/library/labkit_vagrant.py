#!/usr/bin/python
"""Ansible module: bring one Vagrant (vagrant-libvirt) machine up or down, idempotently."""
from __future__ import annotations

DOCUMENTATION = r"""
module: labkit_vagrant
short_description: Bring one Vagrant machine of a labkit lab up or down
description:
  - Drives Vagrant through python-vagrant in a folder holding the machine's Vagrantfile.
  - C(present) reports changed=false when the machine is already running.
  - Leftovers of an interrupted run (a libvirt domain Vagrant has no record of) are removed
    before creating the machine, so a run killed during creation converges.
options:
  workdir: {description: Folder with the Vagrantfile, type: path, required: true}
  state: {description: present or absent, type: str, default: present, choices: [present, absent]}
  machine: {description: Vagrant machine name, type: str, default: vm}
  domain: {description: Libvirt domain name Vagrant gives the machine, type: str, required: true}
  vagrant_home: {description: VAGRANT_HOME for Vagrant, type: path}
  libvirt_uri: {description: libvirt connection, type: str, default: "qemu:///system"}
  timeout: {description: Hard limit in seconds for C(vagrant up), type: int, default: 900}
  network:
    description:
      - The libvirt network the machine must be on (its management network); it must exist.
        A machine found on another network (made before labkit gave each VM a network of its
        own) is recreated on this one. Empty: not checked.
    type: str
    default: ""
requirements: [python-vagrant, vagrant, vagrant-libvirt]
"""

RETURN = r"""
status: {description: machine state after the run, type: str}
ssh_host: {description: address of the machine, type: str}
ssh_port: {description: SSH port, type: int}
ssh_user: {description: SSH user, type: str}
ssh_identity_file: {description: the machine's own private key (made beside its Vagrantfile), type: str}
seconds: {description: time spent in vagrant up/destroy, type: float}
phases: {description: "after a boot: seconds of C(vagrant up) (to SSH with the box's key) and of the swap to the VM's own key", type: dict}
log: {description: file holding Vagrant's output, type: str}
"""

import os
import signal
import subprocess
import threading
import time

from ansible.module_utils.basic import AnsibleModule

try:
    import vagrant  # python-vagrant
    HAS_VAGRANT = True
except ImportError:  # pragma: no cover
    HAS_VAGRANT = False


def _children(pid):
    """Direct and indirect child PIDs of ``pid`` (from /proc)."""
    parents = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in parents.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Watchdog:
    """Kill every child process when the hard timeout passes."""

    def __init__(self, seconds):
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self):
        self.fired = True
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in reversed(_children(os.getpid())):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            time.sleep(3)

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()
        return False


def _virsh(uri, *args):
    return subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True)


def domain_exists(uri, name):
    return _virsh(uri, "dominfo", name).returncode == 0


def volume_exists(uri, vol):
    return _virsh(uri, "vol-info", "--pool", "default", vol).returncode == 0


def domain_networks(uri, name):
    """The libvirt networks the domain's interfaces are on; None when there is no such domain."""
    r = _virsh(uri, "domiflist", name)
    if r.returncode != 0:
        return None
    # Interface  Type  Source  Model  MAC
    return [cols[2] for cols in (ln.split() for ln in r.stdout.splitlines()) if len(cols) >= 3 and cols[1] == "network"]


def remove_leftover(uri, name):
    """Remove a domain Vagrant lost track of (and its disks)."""
    _virsh(uri, "destroy", name)
    r = _virsh(uri, "undefine", name, "--remove-all-storage", "--nvram")
    if r.returncode != 0:
        _virsh(uri, "undefine", name, "--remove-all-storage")
    _virsh(uri, "vol-delete", "--pool", "default", name + ".img")


KEY = "id_ed25519"


def own_key(workdir, domain):
    """The VM's own SSH key pair beside its Vagrantfile, made once (Ed25519: instant)."""
    key = os.path.join(workdir, KEY)
    if not (os.path.isfile(key) and os.path.isfile(key + ".pub")):
        for f in (key, key + ".pub"):
            if os.path.exists(f):
                os.unlink(f)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"labkit {domain}", "-f", key],
                       check=True, capture_output=True)
    return key


def login_keys(workdir, vagrant_home):
    """Keys a VM may take, the VM's own first: then the key Vagrant itself generated for a VM
    made by an older labkit, then Vagrant's public insecure key (a box's first boot)."""
    home = vagrant_home or os.path.expanduser("~/.vagrant.d")
    keys = [os.path.join(workdir, KEY), os.path.join(workdir, ".vagrant/machines/vm/libvirt/private_key"),
            os.path.join(home, "insecure_private_key")]
    return [k for k in keys if os.path.isfile(k)]


def _ssh(host, key, command, port=22, user="vagrant", timeout=30):
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
           "-i", key, "-p", str(port), f"{user}@{host}", command]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def ssh_ok(conf):
    """Can we log in with these settings (host, port, user, key)?"""
    if not conf.get("HostName") or not conf.get("IdentityFile"):
        return False
    return _ssh(conf["HostName"], conf["IdentityFile"], "true", port=conf.get("Port", 22),
                user=conf.get("User", "vagrant"))


def address(uri, domain):
    """The domain's IPv4 address from its DHCP lease (what vagrant-libvirt reads too), or None."""
    r = _virsh(uri, "domifaddr", domain, "--source", "lease")
    for line in r.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[2] == "ipv4":
            return cols[3].split("/")[0]
    return None


HALF_MADE = "half-made"


def adopt(host, keys, fresh=False):
    """Make the VM take its own key (keys[0]) and no other: when it does not yet, log in with
    the next key it takes and replace its authorized keys, in one SSH call. The own key when
    the VM takes it, else None. ``fresh`` (a VM this run's `vagrant up` started): skip the
    first try with the own key, the box cannot know it yet. Not fresh, a VM that still takes
    Vagrant's insecure key was started by a run that was interrupted before it was ready:
    HALF_MADE (recreated, so its boot is measured, K8), its key left as it is."""
    own = keys[0]
    if not fresh and _ssh(host, own, "true"):
        return own
    with open(own + ".pub") as f:
        pub = f.read().strip()
    swap = ("umask 077 && mkdir -p ~/.ssh && printf '%s\\n' '" + pub + "' > ~/.ssh/authorized_keys.labkit"
            " && mv -f ~/.ssh/authorized_keys.labkit ~/.ssh/authorized_keys")
    for k in keys[1:]:
        if not fresh and k.endswith("insecure_private_key"):
            if _ssh(host, k, "true"):
                return HALF_MADE
        elif _ssh(host, k, swap):
            return own
    return own if fresh and _ssh(host, own, "true") else None


def running_with_known_ssh(uri, domain, workdir):
    """The SSH settings of the last successful run, if the domain runs and they still log in
    with the VM's own key; None otherwise (then Vagrant is asked)."""
    cfg = os.path.join(workdir, "ssh_config")
    if not os.path.isfile(cfg) or _virsh(uri, "domstate", domain).stdout.strip() != "running":
        return None
    conf = {}
    with open(cfg) as f:
        for line in f:
            parts = line.split(None, 1)
            if len(parts) == 2 and not parts[0].startswith("#"):
                conf[parts[0]] = parts[1].strip()
    if conf.get("IdentityFile", "").endswith("insecure_private_key") or not ssh_ok(conf):
        return None
    return conf


def wait_login(v, machine, uri, domain, keys, seconds, fresh=False):
    """Wait until the VM answers SSH and takes its own key (swapped in when it still takes
    another): the SSH settings when it does, None when it never did, HALF_MADE (``adopt``)."""
    deadline = time.monotonic() + seconds
    while True:
        host = address(uri, domain)
        if host is None:  # no lease record (a network labkit did not make): ask Vagrant
            try:
                host = v.conf(vm_name=machine).get("HostName")
            except subprocess.CalledProcessError:
                host = None
        key = adopt(host, keys, fresh) if host else None
        if key == HALF_MADE:
            return HALF_MADE
        if key:
            return {"HostName": host, "Port": 22, "User": "vagrant", "IdentityFile": key}
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.25)  # sshd answers a second or two after the lease: catch it early


# Vagrant's VMBootBadState: its boot wait read a state other than running
BAD_STATE = "entered an invalid state while waiting for it"


def _tail(path, n=15):
    """The last lines of this run's part of the Vagrant log, Ruby backtraces and repeats left out."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    text = text.rsplit("==== labkit: vagrant up", 1)[-1]
    out = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line.strip() or line.lstrip().startswith("from /") or (out and out[-1] == line):
            continue
        out.append(line)
    return "\n".join(out[-n:])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            workdir=dict(type="path", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            machine=dict(type="str", default="vm"),
            domain=dict(type="str", required=True),
            vagrant_home=dict(type="path"),
            libvirt_uri=dict(type="str", default="qemu:///system"),
            timeout=dict(type="int", default=900),
            network=dict(type="str", default=""),
        ),
        supports_check_mode=True,
    )
    if not HAS_VAGRANT:
        module.fail_json(msg="python-vagrant is not importable by " + os.sys.executable,
                         hint="run this module with labkit's Python (ansible_python_interpreter="
                              "{{ ansible_playbook_python }} for localhost)")
    p = module.params
    workdir, machine, domain, uri = p["workdir"], p["machine"], p["domain"], p["libvirt_uri"]
    env = dict(os.environ)
    env.update(LIBVIRT_DEFAULT_URI=uri, VAGRANT_DEFAULT_PROVIDER="libvirt",
               VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_NO_COLOR="1")
    if p["vagrant_home"]:
        env["VAGRANT_HOME"] = p["vagrant_home"]
    log = os.path.join(workdir, "vagrant.log")
    result = dict(changed=False, domain=domain, log=log, seconds=0.0)

    if not os.path.isfile(os.path.join(workdir, "Vagrantfile")):
        if p["state"] == "absent":
            if domain_exists(uri, domain) or volume_exists(uri, domain + ".img"):
                result["changed"] = True
                if not module.check_mode:
                    remove_leftover(uri, domain)
            module.exit_json(status="not_created", **result)
        module.fail_json(msg=f"no Vagrantfile in {workdir}", **result)

    moved_from = None
    if p["state"] == "present" and p["network"] and not module.check_mode:
        if _virsh(uri, "net-info", p["network"]).returncode != 0:
            module.fail_json(msg=f"the libvirt network {p['network']} of {domain} does not exist",
                             hint="`labkit up` makes it (role lab_network) before the VMs", **result)
        nets = domain_networks(uri, domain)
        if nets is not None and p["network"] not in nets:
            moved_from = nets  # on another (the old shared) network: recreated on its own below

    if p["state"] == "present" and not module.check_mode:
        try:
            own_key(workdir, domain)
        except (OSError, subprocess.CalledProcessError) as e:
            module.fail_json(msg=f"could not make the SSH key of {domain} in {workdir}: {e}", **result)
    keys = login_keys(workdir, p["vagrant_home"])

    if p["state"] == "present" and not module.check_mode and moved_from is None:
        conf = running_with_known_ssh(uri, domain, workdir)
        if conf:  # the fast path of a no-op re-run: no Vagrant (Ruby) start at all
            module.exit_json(status="running", ssh_host=conf["HostName"], ssh_port=int(conf.get("Port", 22)),
                             ssh_user=conf.get("User", "vagrant"), ssh_identity_file=conf["IdentityFile"],
                             fast_path=True, **result)

    v = vagrant.Vagrant(root=workdir, env=env, out_cm=vagrant.make_file_cm(log),
                        err_cm=vagrant.make_file_cm(log))
    try:
        state = v.status(vm_name=machine)[0].state
    except (subprocess.CalledProcessError, IndexError) as e:
        module.fail_json(msg=f"vagrant status failed in {workdir}: {e}", **result)

    t0 = time.monotonic()
    if moved_from is not None:
        with open(log, "a") as f:
            f.write(f"\n==== labkit: {domain} is on {', '.join(moved_from) or 'no network'}, not on its own "
                    f"network {p['network']}: recreating ({time.ctime()}) ====\n")
        try:
            v.destroy(vm_name=machine)
        except subprocess.CalledProcessError:
            pass
        remove_leftover(uri, domain)
        state = "not_created"
        result["moved_from"] = moved_from

    if p["state"] == "absent":
        if state != "not_created":
            result["changed"] = True
            if not module.check_mode:
                try:
                    v.destroy(vm_name=machine)
                except subprocess.CalledProcessError:
                    pass  # the leftover sweep below finishes the job
        if domain_exists(uri, domain) or volume_exists(uri, domain + ".img"):
            result["changed"] = True
            if not module.check_mode:
                remove_leftover(uri, domain)
        result["seconds"] = round(time.monotonic() - t0, 1)
        module.exit_json(status="not_created", **result)

    conf = None
    if state == "running" and not module.check_mode:
        # running, but maybe half-made: a run interrupted mid-boot leaves a domain Vagrant
        # calls running whose SSH may still be coming up, or never will, or that still takes
        # Vagrant's insecure key (recreated: a VM of an older labkit, on Vagrant's own key,
        # gets its own key instead)
        conf = wait_login(v, machine, uri, domain, keys, min(p["timeout"], 240))
        if conf is None or conf == HALF_MADE:
            why = "no SSH" if conf is None else "still Vagrant's insecure key"
            conf = None
            with open(log, "a") as f:
                f.write(f"\n==== labkit: {domain} runs half-made ({why}): recreating ({time.ctime()}) ====\n")
            try:
                v.destroy(vm_name=machine)
            except subprocess.CalledProcessError:
                pass
            remove_leftover(uri, domain)
            state = "not_created"
            result["recreated"] = True

    if state != "running":
        result["changed"] = True
        if module.check_mode:
            module.exit_json(status=state, **result)
        if state == "not_created" and (domain_exists(uri, domain) or volume_exists(uri, domain + ".img")):
            # an interrupted run left a domain or its disk; Vagrant has no record of them and
            # would fail with "Volume for domain is already created"
            remove_leftover(uri, domain)
        with open(log, "a") as f:
            f.write(f"\n==== labkit: vagrant up {machine} ({time.ctime()}) ====\n")
        failure = None
        with Watchdog(p["timeout"]) as wd:
            try:
                # not destroyed by Vagrant on an error: labkit decides below (python-vagrant's
                # up() has no way to pass --no-destroy-on-error)
                v._call_vagrant_command(["up", machine, "--provider=libvirt", "--no-destroy-on-error"])
                getattr(v, "_cached_conf", {})[machine] = None  # what up() does after the command
            except subprocess.CalledProcessError as e:
                failure = f"timed out after {p['timeout']}s" if wd.fired else f"failed (rc={e.returncode})"
        if failure is not None:
            tail = _tail(log)
            if (not wd.fired and BAD_STATE in tail and address(uri, domain)
                    and _virsh(uri, "domstate", domain).stdout.strip() == "running"):
                # Vagrant's boot wait took the state of a domain that runs and has its address
                # for another (libvirt slow to answer under load; its message then names the
                # state ''): the VM is fine, and labkit's own SSH wait below decides
                with open(log, "a") as f:
                    f.write(f"\n==== labkit: {domain} runs and has its address; Vagrant misread its state "
                            f"while waiting: checking SSH ({time.ctime()}) ====\n")
                result["vagrant_misread_state"] = True
            else:
                try:  # what Vagrant itself would have destroyed on the error
                    v.destroy(vm_name=machine)
                except subprocess.CalledProcessError:
                    pass
                remove_leftover(uri, domain)
                cause = next((ln.strip() for ln in reversed(tail.splitlines()) if "rror" in ln), "")
                module.fail_json(
                    msg=f"vagrant up of {domain} {failure}{': ' + cause[-300:] if cause else ''}\n"
                        f"Last lines of {log}:\n{tail}",
                    hint=(f"check: libvirtd running (virsh -c {uri} list --all)? the guest console "
                          f"(virsh -c {uri} console {domain}, or {workdir}/console.log)? "
                          f"dnsmasq of the management network (virsh -c {uri} net-dhcp-leases "
                          f"{p['network'] or 'labkit'})?"),
                    **result)
        state = "running"  # `vagrant up` returns once the domain has its address (the template's communicator)
        t_up = time.monotonic()
        # the guest's sshd comes up after its address: wait here, and give the VM its own key
        conf = wait_login(v, machine, uri, domain, keys, max(30, min(p["timeout"], 600)), fresh=True)
        result["seconds"] = round(time.monotonic() - t0, 1)
        result["phases"] = {"vagrant_up": round(t_up - t0, 1), "own_key": round(time.monotonic() - t_up, 1)}
    if conf is None:
        module.fail_json(msg=f"{domain} is {state} but SSH as vagrant with its key never answered "
                             f"(address {address(uri, domain) or 'unknown'}); see {log} and {workdir}/console.log",
                         **result)
    module.exit_json(
        status=state,
        ssh_host=conf.get("HostName"),
        ssh_port=int(conf.get("Port", 22)),
        ssh_user=conf.get("User", "vagrant"),
        ssh_identity_file=conf.get("IdentityFile"),
        **result,
    )


if __name__ == "__main__":
    main()
