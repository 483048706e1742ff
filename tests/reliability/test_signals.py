"""SIGTERM and SIGINT during an image build: labkit exits 130 and leaves no temp dir behind."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit import procs
from labkit.vm import boxes
from tests.conftest import process_cmdlines

pytestmark = pytest.mark.integration


def mmdebstrap_under(pid: int) -> bool:
    """An mmdebstrap runs under process ``pid`` (labkit runs it in a process group of its own)."""
    mine = set(procs.descendants(pid))
    return any("mmdebstrap" in cmd for p, cmd in process_cmdlines() if p in mine)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_image_build_cleans_up(tmp_path, sig):
    home = tmp_path / "home"
    env = dict(os.environ, LABKIT_HOME=str(home), LABKIT_IMAGE_PREFIX="labkit-sigtest/")
    labkit = str(Path(sys.executable).parent / "labkit")
    # as a terminal's foreground job: SIGINT at its default. A job started in the background by
    # a non-interactive shell (`cmd &`) inherits SIGINT ignored, and Python then keeps ignoring
    # it (no KeyboardInterrupt): labkit would rightly not be interrupted, and this test would
    # see only mmdebstrap die.
    p = subprocess.Popen([labkit, "images", "build", "debian:12"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    tmp = home / "tmp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp.exists() and any(tmp.iterdir())):
        assert p.poll() is None, p.communicate()  # labkit ended before building: say why
        time.sleep(0.2)
    assert tmp.exists() and any(tmp.iterdir()), "the build never started"
    while time.monotonic() < deadline and not mmdebstrap_under(p.pid):  # labkit's own, not another build's
        time.sleep(0.2)
    assert mmdebstrap_under(p.pid), "mmdebstrap never started"
    os.killpg(p.pid, sig) if sig == signal.SIGINT else p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (out, err)
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp.iterdir()) == [], "a temp dir was left behind"
    images = subprocess.run(["docker", "images", "-q", "labkit-sigtest/debian"], capture_output=True, text=True)
    assert images.stdout.strip() == ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_box_build_leaves_no_mount_process_or_folder(tmp_path, sig):
    """mmdebstrap mounts /proc, /sys, /dev/pts and /dev/shm in the box's chroot. Interrupted
    there, labkit stops mmdebstrap's whole process group (apt and dpkg with it), then removes the
    build folder with nothing mounted in it. (Before, a SIGKILL of mmdebstrap alone left the four
    mounts, the folder, and its apt writing on into it.)"""
    home = tmp_path / "home"
    env = dict(os.environ, LABKIT_HOME=str(home))
    labkit = str(Path(sys.executable).parent / "labkit")
    p = subprocess.Popen([labkit, "box", "build", "--force"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not boxes.mounts_under(home):  # mmdebstrap is in the chroot
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.2)
    os.killpg(p.pid, sig) if sig == signal.SIGINT else p.send_signal(sig)  # Ctrl-C: the terminal's whole job
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (out, err)
    assert "interrupted" in err and "Traceback" not in err
    assert boxes.mounts_under(home) == []
    assert [f.name for f in (home / "boxes" / "labkitdebian12").iterdir()] == [".lock"], "a build folder was left"
    assert not [cmd for _, cmd in process_cmdlines() if str(home) in cmd], "a process of the build goes on"
