"""labkit.engines.docker.containers (what `labkit up` measures Docker's containers with): every planned container measured (in parallel), unchanged ones not
measured again, a failure left out and said, never raised. A fake engine client: no engine."""
from __future__ import annotations

import threading

from labkit.engines import cgroup
from labkit.engines import docker as measure


class _Img:
    attrs = {"Size": 5_000_000}


class _Images:
    def __init__(self):
        self.gets = 0

    def get(self, ref):
        self.gets += 1
        return _Img()


class _C:
    def __init__(self, name, started, client):
        self.id = f"id-{name}"
        self.client = client
        self.attrs = {"Created": "2026-11-28T07:52:38.000000000Z", "Image": "sha256:img",
                      "State": {"Running": True, "StartedAt": started}}

    def stats(self, stream, one_shot):
        with self.client.lock:
            self.client.stats_calls += 1
        return {"memory_stats": {"usage": 3 * 2**20, "stats": {"inactive_file": 2**20}}}


class _Containers:
    def __init__(self, client):
        self.client = client

    def get(self, name):
        if name not in self.client.started:
            raise LookupError(name)
        return _C(name, self.client.started[name], self.client)


class _Client:
    def __init__(self, started):
        self.started = started
        self.stats_calls = 0
        self.lock = threading.Lock()
        self.containers = _Containers(self)
        self.images = _Images()


def test_containers_measures_each_and_reuses_unchanged_rows():
    cl = _Client({f"c{i}": "2026-11-28T07:52:39.500000000Z" for i in range(10)})
    rows = measure.containers([(f"c{i}", cl) for i in range(10)])
    assert [r["host"] for r in rows] == [f"c{i}" for i in range(10)]
    assert all(r["memory_bytes"] == 2 * 2**20 and r["ready_seconds"] == 1.5 for r in rows)
    assert cl.stats_calls == 10 and cl.images.gets == 1  # one image size per image
    # a re-run: nothing changed but c3, restarted since
    cl.started["c3"] = "2026-11-28T08:00:00.000000000Z"
    again = measure.containers([(f"c{i}", cl) for i in range(10)], previous={r["host"]: r for r in rows})
    assert cl.stats_calls == 11
    assert [r for r in again if r["host"] != "c3"] == [r for r in rows if r["host"] != "c3"]


def test_containers_leaves_out_and_says_what_it_cannot_measure():
    cl = _Client({"a": "2026-11-28T07:52:39.000000000Z"})
    said = []
    rows = measure.containers([("a", cl), ("gone", cl)], log=said.append)
    assert [r["host"] for r in rows] == ["a"]
    assert said == ["gone: not measured (LookupError)"]
    assert measure.containers([]) == []


def _cgroup_tree(tmp_path, line: str, rel: str, files: dict[str, str]):
    proc, sysfs = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cgroup").write_text(line + "\n")
    d = sysfs / rel
    d.mkdir(parents=True)
    for k, v in files.items():
        (d / k).write_text(v)
    return str(proc), str(sysfs)


def test_cgroup_memory_v1_and_v2_as_docker_stats_counts_it(tmp_path):
    cid = "ab" * 32
    proc, sysfs = _cgroup_tree(tmp_path / "v1", f"4:memory:/docker/{cid}", f"memory/docker/{cid}",
                               {"memory.usage_in_bytes": "5242880", "memory.stat": "cache 9\ntotal_inactive_file 1048576\n"})
    assert cgroup.cgroup_memory(42, cid, proc, sysfs) == (4 * 2**20, cgroup.USAGE_LESS_CACHE)
    proc, sysfs = _cgroup_tree(tmp_path / "v2", f"0::/system.slice/docker-{cid}.scope", f"system.slice/docker-{cid}.scope",
                               {"memory.current": "1000", "memory.stat": "anon 10\ninactive_file 4000\n"})
    assert cgroup.cgroup_memory(42, cid, proc, sysfs) == (1000, cgroup.ALL_CACHE)


def test_cgroup_memory_only_for_the_container_it_names(tmp_path):
    """A pid of another machine's container (a remote lab server) may be any process here: its
    cgroup must name the container's id, else the engine is asked."""
    proc, sysfs = _cgroup_tree(tmp_path, "4:memory:/user.slice", "memory/user.slice",
                               {"memory.usage_in_bytes": "5", "memory.stat": "total_inactive_file 1\n"})
    assert cgroup.cgroup_memory(42, "cd" * 32, proc, sysfs) is None
    assert cgroup.cgroup_memory(43, "cd" * 32, proc, sysfs) is None  # no such process
    assert cgroup.cgroup_memory(0, "cd" * 32, proc, sysfs) is None
