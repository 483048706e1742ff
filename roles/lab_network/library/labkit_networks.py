#!/usr/bin/python
"""Ansible module: the students' Docker networks of a labkit lab on one lab server, in one step."""
from __future__ import annotations

DOCUMENTATION = r"""
module: labkit_networks
short_description: Reconcile a labkit lab's Docker networks on one lab server in one step
description:
  - Makes the students' Docker networks of one labkit lab on one lab server, or removes every
    network of the lab there. Role C(lab_network) calls it, on O(state=present) before the
    containers are made and on O(state=absent) after C(labkit down) removed them.
  - O(state=present) looks the planned networks up by name on the server's engine in one call
    and creates the missing ones of O(networks) in parallel, each a bridge network labelled
    C(labkit.lab), C(labkit.student) and C(labkit.role=network). It returns each student's
    network with its id and bridge (C(br-) and the id's first 12 digits), which role
    C(lab_firewall) needs.
  - A network of a planned name that is not the lab's student's (other C(labkit.lab) or
    C(labkit.student) labels) is not touched; the module fails naming it.
  - An existing network of the lab is kept as it is (its settings are not compared).
  - O(state=absent) removes every network carrying the lab's label (only O(student)'s with
    O(student)), in parallel, disconnecting whatever is still attached first. When dockerd
    still counts an endpoint of a container just removed (C(has active endpoints)), the
    removal is tried again for up to 10 seconds.
  - A failure names every network that failed, with the engine's message; the others are
    still made or removed.
options:
  lab:
    description:
      - Name of the lab. Its networks are labelled C(labkit.lab=<lab>) and found by that label.
    type: str
    required: true
  networks:
    description:
      - With O(state=present), the students' networks. Each item is a dict with the keys
        C(name) (the network's name, C(labkit-<lab>-<student>) in labkit's plans) and
        C(student) (label C(labkit.student)), both required and not empty; other keys are
        ignored.
      - Ignored with O(state=absent).
    type: list
    elements: dict
    default: []
  state:
    description:
      - V(present) makes the networks of O(networks); V(absent) removes the lab's networks.
    type: str
    default: present
    choices: [present, absent]
  student:
    description:
      - With O(state=absent), remove only this student's networks (label C(labkit.student)).
        Empty removes every network of the lab.
      - Ignored with O(state=present).
    type: str
    default: ""
  workers:
    description:
      - How many networks are made or removed at once.
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
  - The module does not support check mode; in check mode the task is skipped.
  - Should dockerd keep counting an endpoint no container holds (moby/moby#43286), the
    network cannot be removed until dockerd restarts; the error says so.
requirements:
  - requests (Python library, on the lab server)
  - community.docker collection (on the controller; its Engine API client is shipped with the module)
  - Docker Engine on the lab server
seealso:
  - module: community.docker.docker_network
author:
  - labkit maintainers
"""

EXAMPLES = r"""
# Role lab_network, tasks/main.yml: the students' networks of this lab server in one run
- name: Ensure the student networks are present
  labkit_networks:
    lab: webclass
    networks:
      - name: labkit-webclass-s01
        student: s01
      - name: labkit-webclass-s02
        student: s02
    state: present
    student: ""
  register: _lab_network_docker

- name: Show student s01's bridge
  ansible.builtin.debug:
    msg: "{{ _lab_network_docker.networks['s01'].bridge }}"

# The role's own call: the plan's items keep only name and student
- name: Ensure the student networks are {{ lab_network_state }}
  labkit_networks:
    lab: "{{ lab_network_lab }}"
    networks: "{{ lab_network_names | map('dict2items') | map('selectattr', 'key', 'in', ['name', 'student'])
                  | map('items2dict') | list }}"
    state: "{{ lab_network_state }}"
    student: "{{ lab_network_student }}"
  when: lab_network_names | length > 0 or lab_network_state == 'absent'

# labkit down: every network of the lab, after its containers
- name: Ensure the lab's networks are absent
  labkit_networks:
    lab: webclass
    state: absent

# Only one student's network
- name: Ensure student s01's network is absent
  labkit_networks:
    lab: webclass
    state: absent
    student: s01
"""

RETURN = r"""
networks:
  description:
    - Each planned network, keyed by its student id. Each value has the keys C(student),
      C(name), C(id) (the network's id), C(bridge) (its Linux bridge, C(br-) and the id's
      first 12 digits) and C(action) (V(created) or V(unchanged)).
    - In the result of a failed task, a network that failed has C(action) V(failed) and an
      C(error) instead of C(id) and C(bridge).
  returned: when O(state=present)
  type: dict
  sample:
    s01:
      student: s01
      name: labkit-webclass-s01
      id: 5d0e1c2b7a44f1e3c9b8a7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6
      bridge: br-5d0e1c2b7a44
      action: created
removed:
  description:
    - Names of the networks removed.
  returned: when O(state=absent)
  type: list
  elements: str
  sample: [labkit-webclass-s01, labkit-webclass-s02]
"""

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible_collections.community.docker.plugins.module_utils._api.api.client import APIClient
    from ansible_collections.community.docker.plugins.module_utils._api.errors import APIError, NotFound
    IMPORT_ERROR = None
except ImportError as e:  # pragma: no cover
    IMPORT_ERROR = e


def bridge(net_id):
    """Docker names a bridge network's interface br-<first 12 digits of its id>."""
    return "br-" + net_id[:12]


class Engine:
    def __init__(self, base_url, timeout=120):
        self.api = APIClient(base_url=base_url, timeout=timeout)

    def networks(self, filters):
        return self.api.get_json("/networks", params={"filters": json.dumps(filters)})

    def create(self, name, labels):
        body = {"Name": name, "Driver": "bridge", "CheckDuplicate": True, "Labels": labels}
        return self.api.post_json_to_json("/networks/create", data=body)["Id"]

    def remove(self, net_id, settle=10.0):
        """Disconnect what is still attached (force), then remove; gone already is fine.

        Right after its containers were removed (in parallel, by the step before), dockerd may
        still count one of their endpoints for a moment and refuse ("has active endpoints")
        with no container attached: seen at 10 students. Tried again for ``settle`` seconds,
        disconnecting whatever is attached each time; then the error, naming what is attached."""
        deadline = time.monotonic() + settle
        while True:
            try:
                info = self.api.get_json("/networks/{0}", net_id)
            except NotFound:
                return
            attached = info.get("Containers") or {}
            for cid in attached:
                try:
                    self.api.post_json("/networks/{0}/disconnect", net_id, data={"Container": cid, "Force": True})
                except NotFound:
                    pass
            try:
                self.api.delete_call("/networks/{0}", net_id)
                return
            except NotFound:
                return
            except APIError as e:
                if "active endpoints" not in str(e) or time.monotonic() >= deadline:
                    names = sorted(c.get("Name") or cid[:12] for cid, c in attached.items())
                    if names:
                        raise RuntimeError(f"{_err(e)} (attached: {', '.join(names)})") from None
                    if "active endpoints" in str(e):  # nothing attached: dockerd's own count
                        raise RuntimeError(f"{_err(e)}, with no container attached: dockerd counts an endpoint "
                                           f"no container holds (moby/moby#43286); restart dockerd, then run "
                                           f"this again") from None
                    raise
            time.sleep(0.25)


def _err(e):
    return f"{type(e).__name__}: {getattr(e, 'explanation', None) or e}"


def present(engine, p):
    lab = p["lab"]
    want = {}
    for n in p["networks"]:
        if not n.get("name") or not n.get("student"):
            raise ValueError(f"network {n.get('name', '?')}: needs name and student")
        want[n["name"]] = n
    have = {}
    for row in engine.networks({"name": sorted(want)}):  # `name` filters by substring: exact names below
        if row.get("Name") in want:
            have[row["Name"]] = row

    def one(n):
        labels = {"labkit.lab": lab, "labkit.student": n["student"], "labkit.role": "network"}
        row = have.get(n["name"])
        if row is not None:
            lbl = row.get("Labels") or {}
            if lbl.get("labkit.lab") != lab or lbl.get("labkit.student") != n["student"]:
                return {"student": n["student"], "name": n["name"], "action": "failed",
                        "error": f"a network named {n['name']} exists that is not lab {lab}'s "
                                 f"(labels {lbl}): remove or rename it"}
            return {"student": n["student"], "name": n["name"], "id": row["Id"], "action": "unchanged"}
        try:
            nid = engine.create(n["name"], labels)
        except Exception as e:  # noqa: BLE001 - reported per network
            return {"student": n["student"], "name": n["name"], "action": "failed", "error": _err(e)}
        return {"student": n["student"], "name": n["name"], "id": nid, "action": "created"}

    with ThreadPoolExecutor(max_workers=max(1, min(p["workers"], len(want) or 1))) as pool:
        results = list(pool.map(one, want.values()))
    for r in results:
        if "id" in r:
            r["bridge"] = bridge(r["id"])
    return results


def absent(engine, p):
    label = [f"labkit.lab={p['lab']}"] + ([f"labkit.student={p['student']}"] if p["student"] else [])
    rows = engine.networks({"label": label})

    def one(row):
        try:
            engine.remove(row["Id"])
        except Exception as e:  # noqa: BLE001 - reported per network
            return {"name": row["Name"], "action": "failed", "error": _err(e)}
        return {"name": row["Name"], "action": "removed"}

    if not rows:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(p["workers"], len(rows)))) as pool:
        return list(pool.map(one, rows))


def main():
    module = AnsibleModule(
        argument_spec={
            "lab": {"type": "str", "required": True},
            "networks": {"type": "list", "elements": "dict", "default": []},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "student": {"type": "str", "default": ""},
            "workers": {"type": "int", "default": 8},
            "docker_host": {"type": "str"},
        },
        supports_check_mode=False,
    )
    if IMPORT_ERROR is not None:
        module.fail_json(msg=f"labkit_networks needs community.docker's Engine API client and Python's "
                             f"requests on the lab server (`labkit prepare` installs python3-requests): {IMPORT_ERROR}")
    p = module.params
    base_url = p["docker_host"] or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    sock = base_url[len("unix://"):] if base_url.startswith("unix://") else ""
    if (p["state"] == "absent" and os.geteuid() != 0 and sock and os.path.exists(sock)
            and not os.access(sock, os.R_OK | os.W_OK)):
        # an ordinary account that may not use this Docker engine (a student on a classroom
        # machine, its lab on rootless Podman): it cannot have made a network there, so none
        # of its networks is there to remove
        module.exit_json(changed=False, removed=[], skipped_no_access=sock)
    try:
        engine = Engine(base_url)
        results = present(engine, p) if p["state"] == "present" else absent(engine, p)
    except ValueError as e:
        module.fail_json(msg=str(e))
    except Exception as e:  # noqa: BLE001
        module.fail_json(msg=f"the container engine does not answer at {base_url}: {_err(e)}")
    failed = [r for r in results if r["action"] == "failed"]
    changed = any(r["action"] in ("created", "removed") for r in results)
    out = {"changed": changed}
    if p["state"] == "present":
        out["networks"] = {r["student"]: r for r in results}
    else:
        out["removed"] = [r["name"] for r in results if r["action"] == "removed"]
    if failed:
        module.fail_json(msg=f"{len(failed)} of {len(results)} network(s) failed: "
                             + "; ".join(f"{r['name']}: {r['error']}" for r in failed), **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
