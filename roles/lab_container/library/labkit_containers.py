#!/usr/bin/python
"""Ansible module: every planned container of a labkit lab on one lab server, in one step."""
from __future__ import annotations

DOCUMENTATION = r"""
module: labkit_containers
short_description: Reconcile a labkit lab's Docker containers on one lab server in one step
description:
  - Makes the planned containers of one labkit lab exist and run on one lab server's Docker
    Engine, or removes every container of the lab there. Role C(lab_container) calls it,
    once per lab server (C(tasks/server.yml)) or once per container delegated to its server
    (C(tasks/main.yml)), and C(labkit down) through the role's C(tasks/down.yml).
  - With O(state=present) the module lists the lab's containers in one call (by the label
    C(labkit.lab)), creates the missing ones, starts stopped ones and recreates those that
    drifted from the plan, then returns one result per container. A container made by an
    older labkit with the restart policy C(unless-stopped), and as planned otherwise, gets
    the policy C(no) in place (C(updated)), so the student's work in it stays.
  - Drift is a hash of the planned settings, stored on the container as the label
    C(labkit.spec); a container whose image tag now names another image is recreated too.
    A container made before the label existed (no C(labkit.spec)) is compared field by
    field and kept when it matches.
  - Every container runs C(sleep infinity) as PID 1 (no init, stopped with C(SIGKILL)),
    with the restart policy C(no) - nothing of a lab comes back on its own after a reboot or
    a restart of dockerd, before C(labkit up) has made the lab's firewall rules again (they
    are not persistent) - and is hardened the same way - never
    privileged, no mounts, the capabilities of O(cap_drop) dropped but those of O(cap_add),
    the O(security_opts) (C(no-new-privileges)), memory, CPU and PID limits. It is labelled
    C(labkit.lab), C(labkit.student), C(labkit.role=container) and C(labkit.distro).
  - The networks are worked on in parallel (O(workers) at once); the containers of one
    network are made or removed one after another, because dockerd can otherwise leave a
    network counting an endpoint no container holds (moby/moby#43286).
  - Containers of the lab that are not in O(containers) are left alone (O(state=absent)
    removes by label).
  - A failure names every container that failed, with the engine's message; the others
    are still made.
  - O(state=absent) removes every container carrying the lab's label (only O(student)'s
    with O(student)), in parallel, with their anonymous volumes, then the volumes carrying
    the label - what C(labkit down) does on each lab server, whatever state the last run left.
options:
  lab:
    description:
      - Name of the lab. Its containers are labelled C(labkit.lab=<lab>) and found by that label.
    type: str
    required: true
  state:
    description:
      - V(present) makes the containers of O(containers) exist and run as planned.
      - V(absent) removes every container and volume of the lab (of O(student) when given).
    type: str
    default: present
    choices: [present, absent]
  student:
    description:
      - With O(state=absent), remove only this student's containers and volumes (label
        C(labkit.student)). Empty removes every container and volume of the lab.
      - Ignored with O(state=present), where each container names its student.
    type: str
    default: ""
  containers:
    description:
      - The planned containers. Each item is a dict with the keys C(name) (the container's
        name), C(image) (the image reference), C(hostname), C(network) (the student's Docker
        network, made beforehand by C(labkit_networks)), C(student) (label C(labkit.student))
        and C(distro) (label C(labkit.distro), the catalogue reference, such as V(debian:12)).
        Every key is required and must not be empty; other keys are ignored but C(init).
      - C(init) (optional) is PID 1 - V(none) (C(sleep infinity), stopped with SIGKILL), V(tini)
        (Docker's C(--init) in front of C(sleep): orphans reaped, signals passed on) or V(systemd)
        (the image's own command, systemd, with C(/run) and C(/run/lock) as tmpfs, SETPCAP, and
        its cgroups - a private cgroup namespace on a cgroup v2 server, the name=systemd hierarchy
        on a v1 one; never privileged). A container whose C(init) changes is recreated.
      - Required with O(state=present); ignored with O(state=absent).
    type: list
    elements: dict
  memory:
    description:
      - Memory limit of each container, in Docker's units - a number of bytes, or a number with
        the suffix V(k), V(m), V(g) or V(t) (powers of 1024), such as V(256m) or V(1g).
    type: str
    default: 256m
  cpus:
    description:
      - CPU limit of each container, in cores (Docker's C(NanoCpus)).
    type: float
    default: 1.0
  pids:
    description:
      - Maximum number of processes in each container (Docker's C(PidsLimit)).
    type: int
    default: 256
  cap_drop:
    description:
      - Capabilities dropped from each container.
    type: list
    elements: str
    default: [ALL]
  cap_add:
    description:
      - Capabilities each container keeps, added back after O(cap_drop). Role C(lab_container)
        passes C(CHOWN), C(DAC_OVERRIDE), C(FOWNER), C(FSETID), C(KILL), C(SETGID), C(SETUID),
        C(NET_BIND_SERVICE) and C(SYS_CHROOT).
    type: list
    elements: str
    default: []
  security_opts:
    description:
      - Docker security options of each container.
    type: list
    elements: str
    default: [no-new-privileges]
  pull:
    description:
      - When to pull an image from its registry (once per image and run).
      - V(never) uses only images already on the lab server (built offline with
        C(labkit images build) or loaded with C(labkit prepare --bundle)); a container whose
        image is missing fails.
      - V(missing) pulls an image the server does not have.
      - V(always) pulls every image of the plan.
    type: str
    default: never
    choices: [never, missing, always]
  workers:
    description:
      - How many networks are worked on at once. The containers of one network are made or
        removed one after another.
    type: int
    default: 8
  docker_host:
    description:
      - Address of the Docker Engine API, such as V(unix:///var/run/docker.sock) or
        V(tcp://192.0.2.10:2375).
      - When not set, the module uses the environment variable E(DOCKER_HOST) on the lab
        server, else V(unix:///var/run/docker.sock).
    type: str
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: none
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - The module runs on the lab server and talks to the Docker Engine over its REST API with
    community.docker's own Engine API client, which Ansible ships with the module. The
    server's Python needs only C(requests) (C(labkit prepare) installs C(python3-requests));
    the Docker SDK for Python is not needed.
  - A container that drifted is removed and made again, and whatever was written in it is lost.
  - The module does not support check mode; in check mode the task is skipped.
requirements:
  - requests (Python library, on the lab server)
  - community.docker collection (on the controller; its Engine API client is shipped with the module)
  - Docker Engine on the lab server
seealso:
  - module: community.docker.docker_container
author:
  - labkit maintainers
"""

EXAMPLES = r"""
# Role lab_container, tasks/server.yml: every planned container of one lab server in one
# run, on the lab server itself
- name: Ensure the lab's containers on this server are running
  labkit_containers:
    lab: webclass
    containers:
      - name: labkit-webclass-s01-debian12
        image: debian:12
        hostname: s01-debian12
        network: labkit-webclass-s01
        student: s01
        distro: debian:12
      - name: labkit-webclass-s01-debian13
        image: debian:13
        hostname: s01-debian13
        network: labkit-webclass-s01
        student: s01
        distro: debian:13
    memory: 256m
    cpus: 1.0
    pids: 256
    cap_drop: [ALL]
    cap_add: [CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, NET_BIND_SERVICE, SYS_CHROOT]
    security_opts: [no-new-privileges]
    pull: never
  register: lab_container_result

- name: Show what was done
  ansible.builtin.debug:
    msg: "{{ lab_container_result.counts }}"

# Role lab_container, tasks/main.yml: one container, from the container's own inventory
# host, made on its lab server (Ansible's forks make many at once)
- name: Ensure the container is running
  labkit_containers:
    lab: "{{ lab_container_lab }}"
    containers:
      - name: "{{ lab_container_name }}"
        image: "{{ lab_container_image }}"
        hostname: "{{ lab_container_hostname }}"
        network: "{{ lab_container_network }}"
        student: "{{ lab_container_student }}"
        distro: "{{ lab_container_distro }}"
    memory: "{{ lab_container_memory }}"
    cpus: "{{ lab_container_cpus }}"
    pids: "{{ lab_container_pids }}"
    cap_drop: "{{ lab_container_cap_drop }}"
    cap_add: "{{ lab_container_cap_add }}"
    security_opts: "{{ lab_container_security_opts }}"
    pull: "{{ lab_container_pull }}"
  delegate_to: "{{ lab_container_server }}"

# A lab server with Internet access: pull the images it lacks, on an engine listening elsewhere
- name: Ensure the lab's containers are running, images pulled when missing
  labkit_containers:
    lab: webclass
    containers: "{{ lab_container_containers }}"
    pull: missing
    docker_host: unix:///run/docker.sock

# Role lab_container, tasks/down.yml (labkit down): every container and volume of the lab
- name: Ensure the lab's containers on this server are absent
  labkit_containers:
    lab: webclass
    state: absent
  register: lab_container_removed

# Only one student's containers and volumes
- name: Ensure student s01's containers are absent
  labkit_containers:
    lab: webclass
    state: absent
    student: s01
"""

RETURN = r"""
containers:
  description:
    - One item per container - those of O(containers) in their order with O(state=present),
      the lab's containers found by label with O(state=absent).
    - With O(state=absent), a labelled volume that could not be removed is an item too.
    - The same list is returned by a failed task, where it names what failed and why.
  returned: always
  type: list
  elements: dict
  sample:
    - name: labkit-webclass-s01-debian12
      action: created
      id: 9a1f6b7c4d2e8f0a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a
    - name: labkit-webclass-s01-debian13
      action: recreated
      why: image debian:13 is another image now
      id: 4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a9a1f6b7c4d2e8f0a1b3c5d7e9f0a2b
  contains:
    name:
      description:
        - The container's name. A volume that could not be removed (O(state=absent)) is
          named C(volume <name>).
      returned: always
      type: str
      sample: labkit-webclass-s01-debian12
    action:
      description:
        - What was done. With O(state=present) V(created), V(recreated), V(started),
          V(updated) (the restart policy set to C(no) in place, and started when stopped),
          V(unchanged) or V(failed); with O(state=absent) V(removed) or V(failed).
        - V(failed) appears only in the result of a failed task.
      returned: always
      type: str
      sample: created
    id:
      description:
        - The container's id (with V(recreated), the new container's).
      returned: when RV(containers[].action) is not V(failed)
      type: str
      sample: 9a1f6b7c4d2e8f0a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a
    why:
      description:
        - Why the container was recreated - its image tag names another image now, its
          settings differ from the plan, or (a container made before C(labkit.spec)) its
          settings differ from the plan field by field.
      returned: when RV(containers[].action=recreated)
      type: str
      sample: settings differ from the plan
    error:
      description:
        - The error's type and the engine's message.
      returned: when RV(containers[].action=failed)
      type: str
      sample: "RuntimeError: image debian:12 is not on this lab server (never pulled here: `labkit images build` or `labkit prepare --bundle`)"
failed_containers:
  description:
    - Names of the containers (and C(volume <name>) items) that failed.
    - Always empty in a successful result - a failure fails the task, whose result then
      names them here.
  returned: always
  type: list
  elements: str
  sample: []
counts:
  description:
    - How many containers got each action.
  returned: when O(state=present)
  type: dict
  sample: {created: 1, recreated: 1, started: 0, updated: 0, unchanged: 0, failed: 0}
  contains:
    created:
      description: Containers created.
      returned: always
      type: int
      sample: 1
    recreated:
      description: Containers removed and made again because they drifted from the plan.
      returned: always
      type: int
      sample: 1
    started:
      description: Stopped containers started.
      returned: always
      type: int
      sample: 0
    updated:
      description:
        - Containers of an older labkit, as planned but for their restart policy
          C(unless-stopped), set to C(no) in place (and started when stopped).
      returned: always
      type: int
      sample: 0
    unchanged:
      description: Containers already running as planned.
      returned: always
      type: int
      sample: 0
    failed:
      description: Containers that failed (only non-zero in a failed task's result).
      returned: always
      type: int
      sample: 0
removed:
  description:
    - What was removed.
  returned: when O(state=absent)
  type: dict
  sample:
    containers: [labkit-webclass-s01-debian12, labkit-webclass-s01-debian13]
    volumes: []
  contains:
    containers:
      description: Names of the containers removed.
      returned: always
      type: list
      elements: str
      sample: [labkit-webclass-s01-debian12, labkit-webclass-s01-debian13]
    volumes:
      description: Names of the labelled volumes removed.
      returned: always
      type: list
      elements: str
      sample: []
"""

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule

# community.docker's own Engine API client (what its modules use): it needs only `requests`,
# which every lab server has (`labkit prepare`: python3-requests), not the docker SDK;
# Ansible ships it to the server with the module
try:
    from ansible_collections.community.docker.plugins.module_utils._api.api.client import APIClient
    from ansible_collections.community.docker.plugins.module_utils._api.errors import NotFound
    IMPORT_ERROR = None
except ImportError as e:  # pragma: no cover
    IMPORT_ERROR = e

SPEC_LABEL = "labkit.spec"
COMMAND = ["sleep", "infinity"]
# PID 1 is a plain `sleep` (no init, as the lesson says): it ignores SIGTERM, so stop with SIGKILL
STOP_SIGNAL = "SIGKILL"
# Nothing of a lab restarts on its own (a reboot, dockerd restarted): labkit's firewall rules are
# not persistent, and `labkit up` makes them again before it starts the containers
RESTART = "no"
# what labkit made containers with before: such a container, as planned otherwise, is updated in place
LEGACY_RESTART = "unless-stopped"


def _bytes(mem):
    """Docker's memory units (256m, 1g, 1048576) as bytes."""
    s = str(mem).strip().lower().rstrip("b")
    mult = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def labels(p, lab):
    out = {"labkit.lab": lab, "labkit.student": p["student"], "labkit.role": "container",
           "labkit.distro": p["distro"]}
    if _init(p) != "none":  # (none: as before inits existed, so such containers keep their settings' hash)
        out["labkit.init"] = _init(p)
    return out


def _init(p):
    return p.get("init") or "none"


# init: systemd: what systemd as PID 1 needs of a container, and no more. Not privileged, no
# capability beyond labkit's but SETPCAP (systemd drops capabilities from a service's bounding
# set: CapabilityBoundingSet=), /run and /run/lock as tmpfs. Its cgroups: on a cgroup v2 server a
# private cgroup namespace; on a v1 (hybrid) server, where Docker mounts the controllers read-only
# and systemd needs its own named hierarchy writable, the host's name=systemd hierarchy (it holds
# no controller: the memory, CPU and PID limits stay read-only and apply).
SYSTEMD_CAPS = ["SETPCAP"]
SYSTEMD_TMPFS = {"/run": "rw,nosuid,nodev,mode=755", "/run/lock": "rw,nosuid,nodev,noexec,size=5m"}
CGROUP_V2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def systemd_host_config():
    if CGROUP_V2:
        return {"CgroupnsMode": "private", "Binds": []}
    return {"CgroupnsMode": "host", "Binds": ["/sys/fs/cgroup/systemd:/sys/fs/cgroup/systemd:rw"]}


def settings(p, params):
    """What the container is made with: the hash of this, as a label, tells drift."""
    init = _init(p)
    s = {
        "image": p["image"], "hostname": p["hostname"], "network": p["network"], "command": COMMAND,
        "labels": labels(p, params["lab"]), "memory": _bytes(params["memory"]),
        "nano_cpus": int(round(float(params["cpus"]) * 1e9)), "pids": int(params["pids"]),
        "cap_drop": sorted(params["cap_drop"]), "cap_add": sorted(params["cap_add"]),
        "security_opt": sorted(params["security_opts"]), "privileged": False, "init": init == "tini",
        "stop_signal": STOP_SIGNAL, "restart": RESTART,
    }
    if init == "tini":  # tini passes SIGTERM on to sleep, which ends: a stop needs no SIGKILL
        s["stop_signal"] = "SIGTERM"
    if init == "systemd":  # the image's command (systemd), which stops on SIGRTMIN+3
        s.update(command=None, stop_signal="SIGRTMIN+3", cap_add=sorted(set(s["cap_add"]) | set(SYSTEMD_CAPS)),
                 systemd={"tmpfs": SYSTEMD_TMPFS, **systemd_host_config()})
    return s


def spec_hash(s):
    return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:24]


def legacy_hash(s):
    """The label of a container an older labkit made with these settings but ``unless-stopped``."""
    return spec_hash({**s, "restart": LEGACY_RESTART})


def _caps(xs):
    return sorted(str(x).upper()[4:] if str(x).upper().startswith("CAP_") else str(x).upper() for x in xs or [])


def matches(attrs, s):
    """A container made before labkit.spec existed: does it already have the planned settings?"""
    cfg, hc = attrs.get("Config") or {}, attrs.get("HostConfig") or {}
    lbl = cfg.get("Labels") or {}
    return (cfg.get("Image") == s["image"] and cfg.get("Hostname") == s["hostname"]
            and list(cfg.get("Cmd") or []) == s["command"]
            and all(lbl.get(k) == v for k, v in s["labels"].items())  # others come from the image
            and hc.get("NetworkMode") == s["network"] and hc.get("Memory") == s["memory"]
            and hc.get("NanoCpus") == s["nano_cpus"] and hc.get("PidsLimit") == s["pids"]
            and _caps(hc.get("CapDrop")) == _caps(s["cap_drop"]) and _caps(hc.get("CapAdd")) == _caps(s["cap_add"])
            and sorted(hc.get("SecurityOpt") or []) == s["security_opt"] and not hc.get("Privileged")
            and not hc.get("Binds") and not hc.get("Mounts")
            and (hc.get("RestartPolicy") or {}).get("Name") == s["restart"])


def _label_filter(lab, student=""):
    return [f"labkit.lab={lab}"] + ([f"labkit.student={student}"] if student else [])


def _err(e):
    return f"{type(e).__name__}: {getattr(e, 'explanation', None) or e}"


class Engine:
    """The few Engine API calls the module makes (REST, through community.docker's client)."""

    def __init__(self, base_url, timeout=120):
        self.api = APIClient(base_url=base_url, timeout=timeout)

    def lab_containers(self, lab, student=""):
        """One call: the lab's containers (one student's) as the list endpoint gives them (Id,
        Names, ImageID, Labels, State), without an inspect each."""
        return self.api.get_json("/containers/json", params={"all": "1", "filters": json.dumps(
            {"label": _label_filter(lab, student)})})

    def lab_volumes(self, lab, student=""):
        return self.api.get_json("/volumes", params={"filters": json.dumps(
            {"label": _label_filter(lab, student)})}).get("Volumes") or []

    def remove_volume(self, name):
        try:
            self.api.delete_call("/volumes/{0}", name)
        except NotFound:
            pass

    def image_id(self, ref):
        try:
            return self.api.get_json("/images/{0}/json", ref)["Id"]
        except NotFound:
            return None

    def pull(self, ref):
        name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
        r = self.api._post(self.api._url("/images/create"), params={"fromImage": name, "tag": tag})
        self.api._raise_for_status(r)
        for line in r.text.splitlines():
            if '"error"' in line:
                raise RuntimeError(f"pull {ref}: {json.loads(line).get('error')}")

    def inspect(self, cid):
        return self.api.get_json("/containers/{0}/json", cid)

    def start(self, cid):
        self.api.post_call("/containers/{0}/start", cid)

    def restart_policy(self, cid):
        return ((self.inspect(cid).get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"

    def set_restart_policy(self, cid, name):
        self.api.post_json_to_json("/containers/{0}/update", cid, data={"RestartPolicy": {"Name": name}})

    def remove(self, cid):
        """Kill and remove, with its anonymous volumes; gone already is fine."""
        try:
            self.api.delete_call("/containers/{0}", cid, params={"force": "1", "v": "1"})
        except NotFound:
            pass

    def create(self, name, body):
        cid = self.api.post_json_to_json("/containers/create", params={"name": name}, data=body)["Id"]
        self.start(cid)
        return cid


class Reconciler:
    def __init__(self, engine, params):
        self.engine = engine
        self.params = params
        self.image_ids = {}

    def image_id(self, ref):
        """The image a tag names now (pulled first when asked); None when it is missing."""
        if ref not in self.image_ids:
            pull = self.params["pull"]
            iid = self.engine.image_id(ref) if pull != "always" else None
            if iid is None and pull != "never":
                self.engine.pull(ref)
                iid = self.engine.image_id(ref)
            self.image_ids[ref] = iid
        return self.image_ids[ref]

    def create(self, p, s, h):
        body = {
            "Image": p["image"], "Hostname": p["hostname"], "Labels": {**s["labels"], SPEC_LABEL: h},
            "HostConfig": {
                "NetworkMode": p["network"], "Memory": s["memory"], "NanoCpus": s["nano_cpus"],
                "PidsLimit": s["pids"], "CapDrop": s["cap_drop"], "CapAdd": s["cap_add"],
                "SecurityOpt": s["security_opt"], "Privileged": False, "Init": s["init"],
                "RestartPolicy": {"Name": RESTART, "MaximumRetryCount": 0},
            },
            "NetworkingConfig": {"EndpointsConfig": {p["network"]: {}}},
        }
        if s["command"] is not None:
            body["Cmd"] = s["command"]
        if s["stop_signal"] is not None:
            body["StopSignal"] = s["stop_signal"]
        if "systemd" in s:
            sd = s["systemd"]
            body["Env"] = ["container=docker"]
            body["HostConfig"].update(Tmpfs=sd["tmpfs"], CgroupnsMode=sd["CgroupnsMode"], Binds=sd["Binds"])
        return self.engine.create(p["name"], body)

    def one(self, p, have):
        """Make container ``p`` as planned; ``have`` is its row from the one list call, or None."""
        out = {"name": p["name"]}
        try:
            s = settings(p, self.params)
            h = spec_hash(s)
            want_image = self.image_id(p["image"])
            if want_image is None:
                raise RuntimeError(f"image {p['image']} is not on this lab server (never pulled here: "
                                   f"`labkit images build` or `labkit prepare --bundle`)")
            if have is not None:
                why = None
                lbl = have.get("Labels") or {}
                if have.get("ImageID") != want_image:
                    why = f"image {p['image']} is another image now"
                elif lbl.get(SPEC_LABEL) not in (None, h, legacy_hash(s)):
                    why = "settings differ from the plan"
                elif lbl.get(SPEC_LABEL) is None and not matches(self.engine.inspect(have["Id"]), s):
                    why = "settings differ from the plan (made before labkit.spec)"
                if why is None and lbl.get(SPEC_LABEL) == legacy_hash(s) != h:
                    # an older labkit's, as planned but for its restart policy: set in place (the label
                    # cannot change, so such a container is inspected at each run)
                    if self.engine.restart_policy(have["Id"]) != RESTART:
                        self.engine.set_restart_policy(have["Id"], RESTART)
                        if have.get("State") != "running":
                            self.engine.start(have["Id"])
                        return {**out, "action": "updated", "id": have["Id"]}
                if why is None:
                    if have.get("State") != "running":
                        self.engine.start(have["Id"])
                        return {**out, "action": "started", "id": have["Id"]}
                    return {**out, "action": "unchanged", "id": have["Id"]}
                self.engine.remove(have["Id"])
                return {**out, "action": "recreated", "why": why, "id": self.create(p, s, h)}
            return {**out, "action": "created", "id": self.create(p, s, h)}
        except Exception as e:  # noqa: BLE001 - every failure is reported per container
            return {**out, "action": "failed", "error": _err(e)}


def per_network(items, network_of, fn, workers):
    """``fn`` over ``items``, the results in their order: items on the same network one after
    another, the networks in parallel (``workers`` at once). dockerd (20.10 here) can leave a
    network counting an endpoint no container holds when containers of that network are made
    or removed at the same time: the network then cannot be removed until dockerd restarts
    ("has active endpoints", moby/moby#43286; seen in a 10-student `down`)."""
    groups = {}
    for i, item in enumerate(items):
        groups.setdefault(network_of(item), []).append(i)
    out = [None] * len(items)

    def run(indexes):
        for i in indexes:
            out[i] = fn(items[i])

    if groups:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(groups)))) as pool:
            list(pool.map(run, groups.values()))
    return out


def _networks_of(row):
    """The networks a listed container is on (the list call's summary)."""
    return tuple(sorted((row.get("NetworkSettings") or {}).get("Networks") or {}))


def absent(engine, p):
    """Remove the lab's containers (one student's), in parallel by network, then its labelled volumes."""
    rows = engine.lab_containers(p["lab"], p["student"])

    def one(row):
        name = (row.get("Names") or [row["Id"]])[0].lstrip("/")
        try:
            engine.remove(row["Id"])
        except Exception as e:  # noqa: BLE001 - reported per container
            return {"name": name, "action": "failed", "error": _err(e)}
        return {"name": name, "action": "removed", "id": row["Id"]}

    results = per_network(rows, _networks_of, one, p["workers"])
    volumes = []
    for v in engine.lab_volumes(p["lab"], p["student"]):
        try:
            engine.remove_volume(v["Name"])
            volumes.append(v["Name"])
        except Exception as e:  # noqa: BLE001 - reported like a container
            results.append({"name": f"volume {v['Name']}", "action": "failed", "error": _err(e)})
    return results, volumes


def main():
    module = AnsibleModule(
        argument_spec={
            "lab": {"type": "str", "required": True},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "student": {"type": "str", "default": ""},
            "containers": {"type": "list", "elements": "dict"},
            "memory": {"type": "str", "default": "256m"},
            "cpus": {"type": "float", "default": 1.0},
            "pids": {"type": "int", "default": 256},
            "cap_drop": {"type": "list", "elements": "str", "default": ["ALL"]},
            "cap_add": {"type": "list", "elements": "str", "default": []},
            "security_opts": {"type": "list", "elements": "str", "default": ["no-new-privileges"]},
            "pull": {"type": "str", "default": "never", "choices": ["never", "missing", "always"]},
            "workers": {"type": "int", "default": 8},
            "docker_host": {"type": "str"},
        },
        required_if=[("state", "present", ["containers"])],
        supports_check_mode=False,
    )
    if IMPORT_ERROR is not None:
        module.fail_json(msg=f"labkit_containers needs community.docker's Engine API client and Python's "
                             f"requests on the lab server (`labkit prepare` installs python3-requests): {IMPORT_ERROR}")
    p = module.params
    base_url = p["docker_host"] or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if p["state"] == "absent":
        main_absent(module, p, base_url)
        return
    plan = p["containers"]
    for item in plan:
        missing = [k for k in ("name", "image", "hostname", "network", "student", "distro") if not item.get(k)]
        if missing:
            module.fail_json(msg=f"container {item.get('name', '?')}: plan lacks {', '.join(missing)}")
    try:
        engine = Engine(base_url)
        rows = engine.lab_containers(p["lab"])
    except Exception as e:  # noqa: BLE001
        module.fail_json(msg=f"the container engine does not answer at {base_url}: {e}")
    existing = {}
    for r in rows:
        for n in r.get("Names") or []:
            existing[n.lstrip("/")] = r
    rec = Reconciler(engine, p)
    for ref in dict.fromkeys(x["image"] for x in plan):  # once per image, before the threads
        try:
            rec.image_id(ref)
        except Exception:  # noqa: BLE001 - said per container below
            rec.image_ids.pop(ref, None)
    results = per_network(plan, lambda x: x["network"], lambda x: rec.one(x, existing.get(x["name"])), p["workers"])
    changed = any(r["action"] not in ("unchanged", "failed") for r in results)
    counts = {a: sum(1 for r in results if r["action"] == a)
              for a in ("created", "recreated", "started", "updated", "unchanged", "failed")}
    finish(module, results, "container(s) failed", changed=changed, counts=counts)


def main_absent(module, p, base_url):
    try:
        results, volumes = absent(Engine(base_url), p)
    except Exception as e:  # noqa: BLE001
        module.fail_json(msg=f"the container engine does not answer at {base_url}: {_err(e)}")
    removed = {"containers": [r["name"] for r in results if r["action"] == "removed"], "volumes": volumes}
    finish(module, results, "could not be removed", changed=bool(removed["containers"] or volumes), removed=removed)


def finish(module, results, failing, **out):
    """Exit with one result per container; fail naming each container that failed."""
    failed = [r for r in results if r["action"] == "failed"]
    if failed:
        module.fail_json(msg=f"{len(failed)} of {len(results)} {failing}: "
                             + "; ".join(f"{r['name']}: {r['error']}" for r in failed),
                         containers=results, failed_containers=[r["name"] for r in failed], **out)
    module.exit_json(containers=results, failed_containers=[], **out)


if __name__ == "__main__":
    main()
