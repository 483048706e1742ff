"""Pure logic of roles/lab_container/library/labkit_containers.py: how the containers of a lab
server are worked on at once. The real engine is in the integration tests (every `up`, `down`)."""
from __future__ import annotations

import threading
import time

from tests.conftest import role_module


def containers():
    return role_module("lab_container", "labkit_containers")


def test_one_network_at_a_time_per_network_networks_in_parallel():
    """dockerd can miscount a network's endpoints when two of its containers are made or removed
    at once (moby/moby#43286): never two of one network together; different networks together."""
    items = [{"name": f"{s}-{d}", "network": s} for s in ("a", "b", "c") for d in ("x", "y", "z")]
    lock = threading.Lock()
    busy: dict[str, int] = {}
    most: dict[str, int] = {}
    at_once = [0, 0]  # now, highest

    def fn(item):
        with lock:
            busy[item["network"]] = busy.get(item["network"], 0) + 1
            most[item["network"]] = max(most.get(item["network"], 0), busy[item["network"]])
            at_once[0] += 1
            at_once[1] = max(at_once)
        time.sleep(0.05)
        with lock:
            busy[item["network"]] -= 1
            at_once[0] -= 1
        return item["name"]

    got = containers().per_network(items, lambda x: x["network"], fn, workers=8)
    assert got == [i["name"] for i in items]  # the items' order
    assert most == {"a": 1, "b": 1, "c": 1}
    assert at_once[1] == 3


def test_listed_containers_are_grouped_by_their_networks():
    mod = containers()
    row = {"NetworkSettings": {"Networks": {"labkit-l-b": {}, "labkit-l-a": {}}}}
    assert mod._networks_of(row) == ("labkit-l-a", "labkit-l-b")
    assert mod._networks_of({}) == ()
