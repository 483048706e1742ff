#!/usr/bin/python
"""Ansible module: the students' Docker networks of a labkit lab on one lab server, in one step."""
from __future__ import annotations

DOCUMENTATION = r"""
module: labkit_networks
short_description: Reconcile a labkit lab's Docker networks on one lab server in one step
description:
  - C(present) lists the lab's networks on the server's engine in one call (by the label
    C(labkit.lab)) and creates the missing ones of O(networks) in parallel, each a bridge
    network labelled C(labkit.lab), C(labkit.student) and C(labkit.role=network). It returns
    each student's network with its id and bridge (C(br-) and the id's first 12 digits).
  - A network of a planned name that is not the lab's (other labels) is not touched: the
    module fails naming it.
  - C(absent) removes every network carrying the lab's label (only O(student)'s with
    O(student)), in parallel, disconnecting whatever is still attached first.
  - A failure names every network that failed, with the engine's message; the others are
    still made or removed.
options:
  lab: {description: Lab name (label labkit.lab), type: str, required: true}
  networks: {description: "present: items with name and student", type: list, elements: dict, default: []}
  state: {description: present or absent, type: str, default: present, choices: [present, absent]}
  student: {description: "absent: only this student's networks", type: str, default: ""}
  workers: {description: Networks made or removed at once, type: int, default: 8}
  docker_host: {description: "Engine address; default: DOCKER_HOST, else the local socket", type: str}
requirements: [requests; community.docker (its Engine API client, shipped with the module)]
"""

RETURN = r"""
networks: {description: "present: per student, name, id, bridge and action (created, unchanged)", type: dict}
removed: {description: "absent: the names of the networks removed", type: list}
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
