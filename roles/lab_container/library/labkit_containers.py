#!/usr/bin/python
"""Ansible module: every planned container of a labkit lab on one lab server, in one step."""
from __future__ import annotations

DOCUMENTATION = r"""
module: labkit_containers
short_description: Reconcile a labkit lab's containers on one lab server in one step
description:
  - Lists the lab's containers on the server's engine in one call (by the label
    C(labkit.lab)), creates the missing ones in parallel, starts stopped ones and recreates
    those that drifted from the plan, then returns one result per container.
  - Drift is a hash of the planned settings, stored on the container as the label
    C(labkit.spec); a container whose image tag now names another image is recreated too.
    A container made before the label existed (no C(labkit.spec)) is compared field by
    field and kept when it matches.
  - Every container is hardened the same way - never privileged, no mounts, every
    capability dropped but O(cap_add), C(no-new-privileges), memory, CPU and PID limits - and
    labelled C(labkit.lab), C(labkit.student), C(labkit.role=container), C(labkit.distro).
  - Containers of the lab that are not in O(containers) are left alone (C(labkit down)
    removes by label).
  - A failure names every container that failed, with the engine's message; the others
    are still made.
options:
  lab: {description: Lab name (label labkit.lab), type: str, required: true}
  containers:
    description:
      - The planned containers, each a dict with name, image, hostname, network, student
        and distro.
    type: list
    elements: dict
    required: true
  memory: {description: "Memory limit in Docker's units (256m)", type: str, default: 256m}
  cpus: {description: CPU limit in cores, type: float, default: 1.0}
  pids: {description: Process limit, type: int, default: 256}
  cap_drop: {description: Capabilities dropped, type: list, elements: str, default: [ALL]}
  cap_add: {description: Capabilities kept, type: list, elements: str, default: []}
  security_opts: {description: Security options, type: list, elements: str, default: [no-new-privileges]}
  pull: {description: When to pull an image, type: str, default: never, choices: [never, missing, always]}
  workers: {description: Containers made at once, type: int, default: 8}
  docker_host: {description: "Engine address; default: DOCKER_HOST, else the local socket", type: str}
requirements: [docker (the Python SDK)]
"""

RETURN = r"""
containers:
  description: One item per planned container - name, action (created, recreated, started, unchanged, failed), id, why (a recreate's reason), error
  type: list
failed_containers: {description: Names of the containers that failed, type: list}
"""

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule

try:
    import docker
    HAS_DOCKER = True
except ImportError:  # pragma: no cover
    HAS_DOCKER = False

SPEC_LABEL = "labkit.spec"
COMMAND = ["sleep", "infinity"]
# PID 1 is a plain `sleep` (no init, as the lesson says): it ignores SIGTERM, so stop with SIGKILL
STOP_SIGNAL = "SIGKILL"
RESTART = "unless-stopped"


def _bytes(mem):
    """Docker's memory units (256m, 1g, 1048576) as bytes."""
    s = str(mem).strip().lower().rstrip("b")
    mult = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def labels(p, lab):
    return {"labkit.lab": lab, "labkit.student": p["student"], "labkit.role": "container",
            "labkit.distro": p["distro"]}


def settings(p, params):
    """What the container is made with: the hash of this, as a label, tells drift."""
    return {
        "image": p["image"], "hostname": p["hostname"], "network": p["network"], "command": COMMAND,
        "labels": labels(p, params["lab"]), "memory": _bytes(params["memory"]),
        "nano_cpus": int(round(float(params["cpus"]) * 1e9)), "pids": int(params["pids"]),
        "cap_drop": sorted(params["cap_drop"]), "cap_add": sorted(params["cap_add"]),
        "security_opt": sorted(params["security_opts"]), "privileged": False, "init": False,
        "stop_signal": STOP_SIGNAL, "restart": RESTART,
    }


def spec_hash(s):
    return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:24]


def _caps(xs):
    return sorted(str(x).upper().removeprefix("CAP_") for x in xs or [])


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


class Reconciler:
    def __init__(self, client, params):
        self.client = client
        self.params = params
        self.image_ids = {}

    def image_id(self, ref):
        """The image a tag names now (pulled first when asked); None when it is missing."""
        if ref not in self.image_ids:
            pull = self.params["pull"]
            img = None
            if pull != "always":
                try:
                    img = self.client.images.get(ref)
                except docker.errors.ImageNotFound:
                    img = None
            if img is None and pull != "never":
                img = self.client.images.pull(ref)
            self.image_ids[ref] = img.id if img is not None else None
        return self.image_ids[ref]

    def create(self, p, s, h):
        c = self.client.containers.create(
            p["image"], COMMAND, name=p["name"], hostname=p["hostname"],
            labels={**s["labels"], SPEC_LABEL: h}, network=p["network"], mem_limit=s["memory"],
            nano_cpus=s["nano_cpus"], pids_limit=s["pids"], cap_drop=s["cap_drop"], cap_add=s["cap_add"],
            security_opt=s["security_opt"], privileged=False, init=False, stop_signal=STOP_SIGNAL,
            restart_policy={"Name": RESTART}, detach=True)
        c.start()
        return c.id

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
                elif lbl.get(SPEC_LABEL) not in (None, h):
                    why = "settings differ from the plan"
                elif lbl.get(SPEC_LABEL) is None:
                    if not matches(self.client.api.inspect_container(have["Id"]), s):
                        why = "settings differ from the plan (made before labkit.spec)"
                if why is None:
                    if have.get("State") != "running":
                        self.client.api.start(have["Id"])
                        return {**out, "action": "started", "id": have["Id"]}
                    return {**out, "action": "unchanged", "id": have["Id"]}
                self.client.api.remove_container(have["Id"], force=True)
                return {**out, "action": "recreated", "why": why, "id": self.create(p, s, h)}
            return {**out, "action": "created", "id": self.create(p, s, h)}
        except Exception as e:  # noqa: BLE001 - every failure is reported per container
            msg = getattr(e, "explanation", None) or str(e)
            return {**out, "action": "failed", "error": f"{type(e).__name__}: {msg}"}


def main():
    module = AnsibleModule(
        argument_spec={
            "lab": {"type": "str", "required": True},
            "containers": {"type": "list", "elements": "dict", "required": True},
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
        supports_check_mode=False,
    )
    if not HAS_DOCKER:
        module.fail_json(msg="labkit_containers needs the docker Python SDK on the lab server "
                             "(python3-docker; `labkit prepare` installs it)")
    p = module.params
    plan = p["containers"]
    for item in plan:
        missing = [k for k in ("name", "image", "hostname", "network", "student", "distro") if not item.get(k)]
        if missing:
            module.fail_json(msg=f"container {item.get('name', '?')}: plan lacks {', '.join(missing)}")
    try:
        client = (docker.DockerClient(base_url=p["docker_host"], timeout=120) if p["docker_host"]
                  else docker.from_env(timeout=120))
        # one call: the lab's containers (low-level list, no inspect per container)
        rows = client.api.containers(all=True, filters={"label": f"labkit.lab={p['lab']}"})
    except Exception as e:  # noqa: BLE001
        module.fail_json(msg=f"the container engine does not answer: {e}")
    existing = {}
    for r in rows:
        for n in r.get("Names") or []:
            existing[n.lstrip("/")] = r
    rec = Reconciler(client, p)
    for ref in dict.fromkeys(x["image"] for x in plan):  # once per image, before the threads
        try:
            rec.image_id(ref)
        except Exception:  # noqa: BLE001 - said per container below
            rec.image_ids.pop(ref, None)
    if plan:
        with ThreadPoolExecutor(max_workers=max(1, min(p["workers"], len(plan)))) as pool:
            results = list(pool.map(lambda x: rec.one(x, existing.get(x["name"])), plan))
    else:
        results = []
    failed = [r for r in results if r["action"] == "failed"]
    changed = any(r["action"] not in ("unchanged", "failed") for r in results)
    counts = {a: sum(1 for r in results if r["action"] == a)
              for a in ("created", "recreated", "started", "unchanged", "failed")}
    if failed:
        module.fail_json(msg=f"{len(failed)} of {len(results)} container(s) failed: "
                             + "; ".join(f"{r['name']}: {r['error']}" for r in failed),
                         containers=results, failed_containers=[r["name"] for r in failed],
                         counts=counts, changed=changed)
    module.exit_json(changed=changed, containers=results, failed_containers=[], counts=counts)


if __name__ == "__main__":
    main()
