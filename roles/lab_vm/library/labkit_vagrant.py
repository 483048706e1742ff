#!/usr/bin/python
"""Ansible module: bring one Vagrant (vagrant-libvirt) machine up or down, idempotently."""
from __future__ import annotations

DOCUMENTATION = r"""
module: labkit_vagrant
short_description: Bring one Vagrant (vagrant-libvirt) machine of a labkit lab up or down
description:
  - Drives Vagrant through python-vagrant in a folder holding the machine's Vagrantfile (role
    C(lab_vm) writes it), with the libvirt provider. Role C(lab_vm) calls it once per student
    VM, on the VM's lab server.
  - O(state=present) makes the machine run and answer SSH with its own key, and returns how
    to reach it. It reports C(changed=false) when the machine already runs - then the SSH
    settings the last run wrote to C(ssh_config) in O(workdir) are tried first, without
    starting Vagrant at all.
  - The machine gets its own Ed25519 key pair, made once beside its Vagrantfile; on its first
    boot the module logs in with the box's key and replaces the machine's authorized keys
    with its own key.
  - On a labkit box (one with C(/usr/local/libexec/labkit/ssh-hostkeys)), that first login also
    hands the machine its ECDSA and RSA (3072 bits) SSH host keys, made on the lab server for
    this machine while C(vagrant up) runs (the box makes the Ed25519 one before its sshd starts;
    RSA takes seconds under emulation). The machine installs them as root after the login
    returns, so SSH answers as early as before; role C(lab_vm) then waits for them (a moment)
    before anything else runs there. Only key types the machine lacks are installed, and the
    lab server keeps no copy.
  - Leftovers of an interrupted run (a libvirt domain or disk Vagrant has no record of) are
    removed before creating the machine, and a running machine that never answers SSH or
    still takes Vagrant's insecure key (an interrupted first boot) is recreated, so a run
    killed during creation converges. A machine on another libvirt network than O(network)
    is recreated on it.
  - C(vagrant up) runs under a hard limit of O(timeout) seconds, then the module waits for SSH.
    On a failure the machine is destroyed and the error quotes the last lines of C(vagrant.log).
  - O(state=absent) destroys the machine and removes whatever domain and disk are left,
    also when the Vagrantfile is gone.
options:
  workdir:
    description:
      - Folder with the machine's Vagrantfile. The module keeps the machine's own SSH key
        (C(id_ed25519)) and Vagrant's output (C(vagrant.log)) there, and reads the
        C(ssh_config) role C(lab_vm) writes there from the last result.
      - With O(state=present) the Vagrantfile must exist.
    type: path
    required: true
  state:
    description:
      - V(present) makes the machine run and answer SSH; V(absent) destroys it with its disks.
    type: str
    default: present
    choices: [present, absent]
  machine:
    description:
      - Vagrant's name of the machine in the Vagrantfile.
    type: str
    default: vm
  domain:
    description:
      - The libvirt domain name Vagrant gives the machine (the Vagrantfile's prefix and
        O(machine)), C(labkit-<lab>-<student>-vm) in labkit's plans; leftovers are found by it.
    type: str
    required: true
  vagrant_home:
    description:
      - E(VAGRANT_HOME) for Vagrant, the folder holding the box (labkit keeps a private one).
        When not set, the E(VAGRANT_HOME) of the module's environment, else Vagrant's default
        C(~/.vagrant.d).
    type: path
  libvirt_uri:
    description:
      - The libvirt connection (also Vagrant's E(LIBVIRT_DEFAULT_URI)).
    type: str
    default: "qemu:///system"
  timeout:
    description:
      - Hard limit in seconds for C(vagrant up) (box upload and boot); Vagrant and its child
        processes are killed when it passes.
      - The wait for SSH after the boot is at most this long too (at least 30 seconds, at most
        600), and at most 240 seconds for a machine found running.
    type: int
    default: 900
  network:
    description:
      - The libvirt network the machine must be on (its management network, made by
        C(labkit_vm_network)); it must exist. A machine found on another network (made before
        labkit gave each VM a network of its own) is recreated on this one.
      - Empty means not checked.
    type: str
    default: ""
  user_network:
    description:
      - The machine is on QEMU's user-mode network (the Vagrantfile's C(-netdev user), for
        libvirt's session instance of an account without root): it is reached at C(127.0.0.1) on a
        port forwarded to its port 22. The module picks a free port before C(vagrant up) and
        writes it to C(ssh_port) in O(workdir), which the Vagrantfile reads.
      - A boot whose console stays empty is restarted once here too, while waiting for SSH.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: partial
    details:
      - Predicts the change for O(state=absent) and for a machine that is not running, and
        returns its current Vagrant state as RV(status). Nothing is logged into in check mode,
        so a running machine makes the task fail for want of SSH settings.
  diff_mode:
    support: none
  platform:
    platforms: linux
notes:
  - python-vagrant must be importable by the Python running the module - for a play on the
    controller, set C(ansible_python_interpreter={{ ansible_playbook_python }}) (labkit's
    own Python has it).
  - Vagrant runs with E(VAGRANT_DEFAULT_PROVIDER=libvirt), E(VAGRANT_CHECKPOINT_DISABLE=1) and
    E(VAGRANT_NO_COLOR=1); C(vagrant up) gets C(--no-destroy-on-error), the module deciding
    what to destroy.
  - When C(vagrant up) fails with Vagrant's "entered an invalid state" error although the
    domain runs and has its address (libvirt slow to answer under load), the module keeps the
    machine and decides by its own SSH wait (RV(vagrant_misread_state)).
requirements:
  - python-vagrant (Python library)
  - vagrant with the vagrant-libvirt plugin
  - libvirt (virsh) and ssh, ssh-keygen
author:
  - labkit maintainers
"""

EXAMPLES = r"""
# Role lab_vm, tasks/main.yml: the student's VM, on its own network, from the Vagrantfile the
# role wrote to the workdir
- name: Ensure the VM is running
  labkit_vagrant:
    workdir: /root/.local/share/labkit/labs/webclass/vagrant/s01
    state: present
    machine: vm
    domain: labkit-webclass-s01-vm
    vagrant_home: /root/.local/share/labkit/vagrant.d
    libvirt_uri: qemu:///system
    timeout: 900
    network: labkit-webclass-s01
  register: _lab_vm_up

- name: Ensure this VM host connects to the VM it just got
  ansible.builtin.set_fact:
    ansible_host: "{{ _lab_vm_up.ssh_host }}"
    ansible_port: "{{ _lab_vm_up.ssh_port }}"
    ansible_user: "{{ _lab_vm_up.ssh_user }}"
    ansible_ssh_private_key_file: "{{ _lab_vm_up.ssh_identity_file }}"

- name: Record how long the VM took from `vagrant up` to SSH, when this run booted it
  ansible.builtin.set_fact:
    labkit_vm_boot_seconds: "{{ _lab_vm_up.seconds }}"
    labkit_vm_boot_phases: "{{ _lab_vm_up.phases }}"
  when: _lab_vm_up.phases is defined

# The role's own call, its network checked only when role lab_network made it
- name: Ensure the VM is {{ 'running' if lab_vm_state == 'present' else 'destroyed' }}
  labkit_vagrant:
    workdir: "{{ lab_vm_workdir }}"
    state: "{{ lab_vm_state }}"
    machine: vm
    domain: "{{ _lab_vm_domain }}"
    vagrant_home: "{{ lab_vm_vagrant_home | default(omit, true) }}"
    libvirt_uri: "{{ lab_vm_libvirt_uri }}"
    timeout: "{{ lab_vm_up_timeout | int }}"
    network: "{{ lab_vm_mgmt_network if lab_vm_mgmt_network_check | bool else '' }}"

# labkit down: the VM and its disks, whatever an earlier run left
- name: Ensure the VM is destroyed
  labkit_vagrant:
    workdir: /root/.local/share/labkit/labs/webclass/vagrant/s01
    state: absent
    domain: labkit-webclass-s01-vm
"""

RETURN = r"""
status:
  description:
    - The machine's state after the run - V(running) with O(state=present), V(not_created)
      with O(state=absent).
    - In check mode, the state Vagrant reports for a machine that is not running (such as
      V(not_created) or V(shutoff)).
  returned: always
  type: str
  sample: running
domain:
  description: The libvirt domain name (O(domain)).
  returned: always
  type: str
  sample: labkit-webclass-s01-vm
log:
  description: The file holding Vagrant's output, C(vagrant.log) in O(workdir).
  returned: always
  type: str
  sample: /root/.local/share/labkit/labs/webclass/vagrant/s01/vagrant.log
seconds:
  description:
    - Seconds spent from C(vagrant up) to SSH with the machine's own key (after a boot), or in
      destroying the machine (O(state=absent)); V(0.0) when nothing was done.
  returned: always
  type: float
  sample: 41.7
ssh_host:
  description: The machine's address (from its DHCP lease, else from Vagrant).
  returned: when O(state=present), outside check mode
  type: str
  sample: 10.204.94.130
ssh_port:
  description: The machine's SSH port.
  returned: when O(state=present), outside check mode
  type: int
  sample: 22
ssh_user:
  description: The SSH user.
  returned: when O(state=present), outside check mode
  type: str
  sample: vagrant
ssh_identity_file:
  description: The machine's own private key, made beside its Vagrantfile.
  returned: when O(state=present), outside check mode
  type: str
  sample: /root/.local/share/labkit/labs/webclass/vagrant/s01/id_ed25519
phases:
  description: Where the seconds of a boot went.
  returned: when the machine was booted by this run
  type: dict
  sample: {vagrant_up: 38.2, own_key: 3.5, host_keys: 0.6}
  contains:
    vagrant_up:
      description: Seconds of C(vagrant up), until the machine had its address.
      returned: always
      type: float
      sample: 38.2
    own_key:
      description:
        - Seconds from then until SSH answered and the machine took its own key (and, on a
          labkit box, was handed its ECDSA and RSA host keys).
      returned: always
      type: float
      sample: 3.5
    host_keys:
      description:
        - Seconds the lab server spent making the machine's ECDSA and RSA host keys, while
          C(vagrant up) ran (not added to RV(seconds) unless C(vagrant up) was quicker).
      returned: always
      type: float
      sample: 0.6
fast_path:
  description:
    - V(true) when the machine ran and answered SSH with the settings of the last run, so
      Vagrant was not started.
  returned: when the machine was found running with working SSH settings
  type: bool
  sample: true
moved_from:
  description:
    - The libvirt networks the machine was on before it was recreated on O(network).
  returned: when the machine was found on another network than O(network)
  type: list
  elements: str
  sample: [labkit]
recreated:
  description:
    - V(true) when a running machine was half-made (no SSH, or still Vagrant's insecure key)
      and was recreated.
  returned: when a half-made machine was recreated
  type: bool
  sample: true
vagrant_misread_state:
  description:
    - V(true) when C(vagrant up) failed reading the state of a domain that ran with its
      address, and the module's own SSH wait decided instead.
  returned: when Vagrant misread the machine's state
  type: bool
  sample: true
restarted_stalled_boot:
  description:
    - V(true) when the machine's first boot stalled (its serial console empty and no address
      240 s after it started: the firmware or boot loader hung under emulation) and it was
      destroyed and booted again.
  returned: when a stalled boot was restarted
  type: bool
  sample: true
"""

import io
import os
import signal
import subprocess
import tarfile
import tempfile
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


KILL_GRACE = 3  # seconds between SIGTERM and SIGKILL to the children


def _kill_children():
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in reversed(_children(os.getpid())):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        time.sleep(KILL_GRACE)


class Watchdog:
    """Kill every child process when the hard timeout passes."""

    def __init__(self, seconds):
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self):
        self.fired = True
        _kill_children()

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()
        return False


# A boot that never gets going: seen once in CI under QEMU emulation, the guest halted in the
# firmware (SeaBIOS) while its boot loader read the disk, and stayed so, with no console output
# and no address, until the hard timeout (15 min). A healthy boot prints its login prompt on the
# serial console (console.log) or gets its address within a minute here, even under load.
STALL_SECONDS = 240


class BootStall(threading.Thread):
    """Watch a `vagrant up`: once the domain runs, if STALL_SECONDS pass with its serial console
    still empty and no DHCP address, kill the children (Vagrant) and set ``fired``: the caller
    destroys the domain and boots it again."""

    def __init__(self, uri, domain, console, seconds=STALL_SECONDS, poll=5.0):
        super().__init__(daemon=True)
        self.uri, self.domain, self.console, self.seconds, self.poll = uri, domain, console, seconds, poll
        self.fired = False
        self._done = threading.Event()

    def run(self):
        started = None
        while not self._done.wait(self.poll):
            if started is None:
                if _virsh(self.uri, "domstate", self.domain).stdout.strip() == "running":
                    started = time.monotonic()
                continue
            if time.monotonic() - started < self.seconds:
                continue
            quiet = not os.path.isfile(self.console) or os.path.getsize(self.console) == 0
            if quiet and not address(self.uri, self.domain) and not self._done.is_set():
                self.fired = True
                _kill_children()
            return

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self.join()
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
    r = _virsh(uri, "undefine", name, "--remove-all-storage", "--nvram", "--snapshots-metadata")
    if r.returncode != 0:
        _virsh(uri, "undefine", name, "--remove-all-storage", "--snapshots-metadata")
    _virsh(uri, "vol-delete", "--pool", "default", name + ".img")


KEY = "id_ed25519"
# the labkit box's installer of ECDSA and RSA host keys (labkit/vm/box/customize.sh)
HOST_KEYS_TOOL = "/usr/local/libexec/labkit/ssh-hostkeys"


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


def make_host_keys(domain):
    """The ECDSA and RSA host keys of a Debian 12 server (``ssh-keygen -A``: ECDSA P-256, RSA
    3072 bits), made here for one machine, as a tar for the box's ``ssh-hostkeys --install``:
    root's, private keys 0600. Made in a private temporary folder, removed before returning:
    the lab server keeps no copy. (The machine makes its Ed25519 key itself; RSA takes seconds
    under emulation, a fraction of one here.)"""
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="labkit-hostkeys-") as d, tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, bits in (("ecdsa", "256"), ("rsa", "3072")):
            key = os.path.join(d, f"ssh_host_{kind}_key")
            subprocess.run(["ssh-keygen", "-q", "-t", kind, "-b", bits, "-N", "", "-C", f"root@{domain}",
                            "-f", key], check=True, capture_output=True)
            for path, mode in ((key + ".pub", 0o644), (key, 0o600)):
                with open(path, "rb") as f:
                    data = f.read()
                info = tarfile.TarInfo(os.path.basename(path))
                info.size, info.mode, info.mtime = len(data), mode, int(time.time())
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Background(threading.Thread):
    """Run ``fn(*args)`` beside the caller; ``result()`` waits and returns it (or raises)."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self._fn, self._args, self._out, self._err = fn, args, None, None
        self.seconds = 0.0
        self.start()

    def run(self):
        t = time.monotonic()
        try:
            self._out = self._fn(*self._args)
        except Exception as e:  # handed to result()
            self._err = e
        self.seconds = time.monotonic() - t

    def result(self):
        self.join()
        if self._err is not None:
            raise self._err
        return self._out


def login_keys(workdir, vagrant_home):
    """Keys a VM may take, the VM's own first: then the key Vagrant itself generated for a VM
    made by an older labkit, then Vagrant's public insecure key (a box's first boot)."""
    home = vagrant_home or os.path.expanduser("~/.vagrant.d")
    keys = [os.path.join(workdir, KEY), os.path.join(workdir, ".vagrant/machines/vm/libvirt/private_key"),
            os.path.join(home, "insecure_private_key")]
    return [k for k in keys if os.path.isfile(k)]


# the last error of a command that logged in and failed (not of a login refused: ssh's 255)
LAST_ERROR = []


def _ssh(host, key, command, port=None, user="vagrant", timeout=30, stdin=None):
    port = NET["port"] if port is None else port
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
           "-i", key, "-p", str(port), f"{user}@{host}", command]
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout,
                           **({"input": stdin} if stdin is not None else {}))
    except subprocess.TimeoutExpired:
        return False
    if p.returncode not in (0, 255):
        LAST_ERROR[:] = [f"rc={p.returncode}: {p.stderr.decode(errors='replace').strip()[-500:]}"]
    return p.returncode == 0


def ssh_ok(conf):
    """Can we log in with these settings (host, port, user, key)?"""
    if not conf.get("HostName") or not conf.get("IdentityFile"):
        return False
    return _ssh(conf["HostName"], conf["IdentityFile"], "true", port=int(conf.get("Port", 22)),
                user=conf.get("User", "vagrant"))


# user-mode networking (option user_network): the forwarded loopback port of the machine's SSH
NET = {"port": 22, "user": False}
PORT_FILE = "ssh_port"


def free_port():
    """A port of 127.0.0.1 nothing listens on now (QEMU binds it when the domain starts)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def address(uri, domain):
    """The domain's IPv4 address from its DHCP lease (what vagrant-libvirt reads too), or None.
    On user-mode networking, 127.0.0.1 once the domain runs."""
    if NET["user"]:
        return "127.0.0.1" if _virsh(uri, "domstate", domain).stdout.strip() == "running" else None
    r = _virsh(uri, "domifaddr", domain, "--source", "lease")
    for line in r.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[2] == "ipv4":
            return cols[3].split("/")[0]
    return None


HALF_MADE = "half-made"


def adopt(host, keys, fresh=False, host_keys=None):
    """Make the VM take its own key (keys[0]) and no other: when it does not yet, log in with
    the next key it takes and replace its authorized keys, in one SSH call. The own key when
    the VM takes it, else None. ``fresh`` (a VM this run's `vagrant up` started): skip the
    first try with the own key, the box cannot know it yet. Not fresh, a VM that still takes
    Vagrant's insecure key was started by a run that was interrupted before it was ready:
    HALF_MADE (recreated, so its boot is measured, K8), its key left as it is.
    ``host_keys`` (``make_host_keys``'s tar): handed over in the same call on a labkit box (one
    with HOST_KEYS_TOOL): read whole into a private file in /dev/shm (memory) before the swap,
    installed by root after it, in the background at the lowest priority. The login returns
    before ``sudo`` and the install have run (about 0.5 s of emulated CPU, spent while the lab
    server runs its next tasks); role lab_vm waits for the keys."""
    own = keys[0]
    if not fresh and _ssh(host, own, "true"):
        return own
    with open(own + ".pub") as f:
        pub = f.read().strip()
    take, install = "", ""
    if host_keys is not None:
        # set -C: no file of that name is followed or reused; the install is started last, so it
        # takes no CPU from the swap
        take = (f"if [ -x {HOST_KEYS_TOOL} ]; then set -C; lk_keys=/dev/shm/labkit-hostkeys.$$; cat > \"$lk_keys\" || exit 1;"
                " set +C; fi && ")
        install = (f" && if [ -n \"${{lk_keys:-}}\" ]; then {{ {{ nice -n 19 sudo -n {HOST_KEYS_TOOL} --install < \"$lk_keys\";"
                   " rm -f \"$lk_keys\"; } > /dev/null 2>&1 & }; fi")
    swap = ("umask 077 && " + take + "mkdir -p ~/.ssh && printf '%s\\n' '" + pub + "' > ~/.ssh/authorized_keys.labkit"
            " && mv -f ~/.ssh/authorized_keys.labkit ~/.ssh/authorized_keys" + install)
    for k in keys[1:]:
        if not fresh and k.endswith("insecure_private_key"):
            if _ssh(host, k, "true"):
                return HALF_MADE
        elif _ssh(host, k, swap, stdin=host_keys):
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


STALLED = "stalled"


def wait_login(v, machine, uri, domain, keys, seconds, fresh=False, host_keys=None, console=None):
    """Wait until the VM answers SSH and takes its own key (swapped in when it still takes
    another, ``host_keys`` handed over in the same call): the SSH settings when it does, None
    when it never did, HALF_MADE (``adopt``). ``console``: STALLED when that file is still empty
    STALL_SECONDS after the wait began (user-mode networking: `vagrant up` returned at once)."""
    t0 = time.monotonic()
    deadline = t0 + seconds
    while True:
        if (console is not None and time.monotonic() - t0 > STALL_SECONDS
                and (not os.path.isfile(console) or os.path.getsize(console) == 0)):
            return STALLED
        host = address(uri, domain)
        if host is None:  # no lease record (a network labkit did not make): ask Vagrant
            try:
                host = v.conf(vm_name=machine).get("HostName")
            except subprocess.CalledProcessError:
                host = None
        key = adopt(host, keys, fresh, host_keys) if host else None
        if key == HALF_MADE:
            return HALF_MADE
        if key:
            return {"HostName": host, "Port": NET["port"], "User": "vagrant", "IdentityFile": key}
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
            user_network=dict(type="bool", default=False),
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
    port_file = os.path.join(workdir, PORT_FILE)
    if p["user_network"]:
        NET["user"] = True
        try:
            with open(port_file) as f:
                NET["port"] = int(f.read().strip() or 0) or 22
        except (OSError, ValueError):
            pass

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
    # again: an account's first Vagrant run (above) has just put Vagrant's insecure key in its home
    keys = login_keys(workdir, p["vagrant_home"])

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
        # the ECDSA and RSA host keys, made here while Vagrant boots the machine
        keygen = Background(make_host_keys, domain)
        failure = None
        console = os.path.join(workdir, "console.log")
        for attempt in (1, 2):  # a second boot only after a stalled first one (BootStall)
            if NET["user"]:  # a free loopback port for this boot, read by the Vagrantfile
                NET["port"] = free_port()
                with open(port_file, "w") as f:
                    f.write(f"{NET['port']}\n")
            with Watchdog(p["timeout"]) as wd, BootStall(uri, domain, console) as stall:
                try:
                    # not destroyed by Vagrant on an error: labkit decides below (python-vagrant's
                    # up() has no way to pass --no-destroy-on-error)
                    v._call_vagrant_command(["up", machine, "--provider=libvirt", "--no-destroy-on-error"])
                    getattr(v, "_cached_conf", {})[machine] = None  # what up() does after the command
                    failure = None
                except subprocess.CalledProcessError as e:
                    failure = (f"timed out after {p['timeout']}s" if wd.fired else
                               f"stalled: no console output and no address {STALL_SECONDS}s after it started, "
                               "twice" if stall.fired else f"failed (rc={e.returncode})")
            if NET["user"] and failure is None and attempt == 1:
                # `vagrant up` returned as soon as the domain started: watch the boot here
                try:
                    made = keygen.result()
                except (OSError, subprocess.CalledProcessError):
                    made = None  # (said after the loop, where the result is asked again)
                if made is not None:
                    conf = wait_login(v, machine, uri, domain, keys, max(30, min(p["timeout"], 600)), fresh=True,
                                      host_keys=made, console=console)
            stalled = stall.fired or conf == STALLED  # in `vagrant up`, or (user-mode) in the SSH wait
            if not stalled or attempt == 2:
                break
            with open(log, "a") as f:
                f.write(f"\n==== labkit: {domain} printed nothing and got no address {STALL_SECONDS}s after it "
                        f"started (a boot stalled in the firmware or loader): destroying it and booting it "
                        f"again ({time.ctime()}) ====\n")
            try:
                v.destroy(vm_name=machine)
            except subprocess.CalledProcessError:
                pass
            remove_leftover(uri, domain)
            result["restarted_stalled_boot"] = True
        keygen.join()  # (done long before: a second here) its temporary folder is gone on every way out
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
        try:
            host_keys = keygen.result()
        except (OSError, subprocess.CalledProcessError) as e:
            module.fail_json(msg=f"could not make the SSH host keys of {domain}: {e}", **result)
        # the guest's sshd comes up after its address: wait here, and give the VM its own key
        # (and hand it its host keys)
        if conf is None or conf == STALLED:  # (on user-mode networking, known already after a first boot)
            conf = wait_login(v, machine, uri, domain, keys, max(30, min(p["timeout"], 600)), fresh=True,
                              host_keys=host_keys)
        result["seconds"] = round(time.monotonic() - t0, 1)
        result["phases"] = {"vagrant_up": round(t_up - t0, 1), "own_key": round(time.monotonic() - t_up, 1),
                            "host_keys": round(keygen.seconds, 1)}
    if conf is None:
        module.fail_json(msg=f"{domain} is {state} but SSH as vagrant with its key never answered "
                             f"(address {address(uri, domain) or 'unknown'})"
                             f"{'; the last command that logged in failed: ' + LAST_ERROR[0] if LAST_ERROR else ''}"
                             f"; see {log} and {workdir}/console.log",
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
