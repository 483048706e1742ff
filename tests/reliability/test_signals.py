"""SIGTERM and SIGINT during an image build: labkit exits 130 and leaves no temp dir behind."""
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import process_cmdlines

pytestmark = pytest.mark.integration


def mmdebstrap_in(sid: int) -> bool:
    """An mmdebstrap runs in session ``sid``."""
    for pid, cmd in process_cmdlines():
        if "mmdebstrap" in cmd:
            with contextlib.suppress(OSError):
                if os.getsid(pid) == sid:
                    return True
    return False


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
        time.sleep(0.2)
    assert tmp.exists() and any(tmp.iterdir()), "the build never started"
    while time.monotonic() < deadline and not mmdebstrap_in(p.pid):  # labkit's own, not another build's
        time.sleep(0.2)
    assert mmdebstrap_in(p.pid), "mmdebstrap never started"
    os.killpg(p.pid, sig) if sig == signal.SIGINT else p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (out, err)
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp.iterdir()) == [], "a temp dir was left behind"
    images = subprocess.run(["docker", "images", "-q", "labkit-sigtest/debian"], capture_output=True, text=True)
    assert images.stdout.strip() == ""
