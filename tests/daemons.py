"""Stop and start the real daemons the way scripts/setup.sh does (no systemd here): for the
fault tests (an engine restarted mid-run, libvirtd stopped)."""
import os
import signal
import subprocess
import time
from pathlib import Path

LOGDIR = Path(os.environ.get("LABKIT_LOGDIR", "/var/log/labkit"))


def _pids(name: str) -> list[int]:
    """This machine's daemon ``name``: not one of the same name in a container (test_58's lab
    server runs its own dockerd and libvirtd), which shares no PID namespace with us."""
    p = subprocess.run(["pgrep", "-x", "--ns", str(os.getpid()), "--nslist", "pid", name],
                       capture_output=True, text=True)
    return [int(x) for x in p.stdout.split()]


def _ok(cmd: list[str]) -> bool:
    return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0


def _wait(pred, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f}s"
        time.sleep(0.3)


def stop(name: str) -> None:
    """SIGTERM a daemon and wait until it has exited."""
    for pid in _pids(name):
        os.kill(pid, signal.SIGTERM)
    _wait(lambda: not _pids(name), f"{name} exits")


def daemon_env() -> dict[str, str]:
    """The environment a daemon is started with: this process's, without a per-session runtime
    folder (a test's temporary XDG_RUNTIME_DIR would become dockerd's runc state folder and vanish
    with the test's files, failing every later `docker exec`)."""
    return {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}


def start_dockerd() -> None:
    LOGDIR.mkdir(parents=True, exist_ok=True)
    with open(LOGDIR / "dockerd.log", "ab") as log:
        subprocess.Popen(["dockerd"], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                         env=daemon_env())
    _wait(lambda: _ok(["docker", "version", "--format", "{{.Server.Version}}"]), "dockerd answers")


def start_libvirtd() -> None:
    subprocess.run(["libvirtd", "-d"], check=True, env=daemon_env())
    _wait(lambda: _ok(["virsh", "-q", "-c", "qemu:///system", "uri"]), "libvirtd answers")
