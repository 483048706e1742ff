"""labkit runs on the Python Debian 12 ships (3.11.2): CI's venv is made with it, and the
code paths that differ on it (tar extraction without filters, K12) are tested here."""
import io
import platform
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from labkit.observe.checks.engine_facts import safe_members


def _debian_major() -> str:
    try:
        return Path("/etc/debian_version").read_text().split(".")[0]
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/usr/bin/python3").exists() or _debian_major() != "12",
                    reason="not a Debian 12 machine")
def test_tests_run_on_debians_own_python():
    """scripts/setup.sh makes .venv from /usr/bin/python3: the tests run on what users have."""
    debian = subprocess.run(["/usr/bin/python3", "-c", "import platform; print(platform.python_version())"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert platform.python_version() == debian, (sys.executable, platform.python_version(), debian)


def _tar(entries) -> tarfile.TarFile:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, kind, link in entries:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.linkname = link
            ti.mode = 0o4755
            t.addfile(ti, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    buf.seek(0)
    return tarfile.open(fileobj=buf)


def test_safe_members_keeps_a_root_fs_and_drops_escapes(tmp_path):
    t = _tar([("etc/os-release", tarfile.REGTYPE, ""), ("/etc/abs", tarfile.REGTYPE, ""),
              ("../evil", tarfile.REGTYPE, ""), ("dev/null", tarfile.CHRTYPE, ""),
              ("bin/sh", tarfile.SYMTYPE, "/usr/bin/dash"), ("x/hard", tarfile.LNKTYPE, "../../etc/passwd")])
    kept = {m.name: m for m in safe_members(t, tmp_path)}
    assert set(kept) == {"etc/os-release", "etc/abs", "bin/sh"}
    assert kept["etc/os-release"].mode == 0o755  # setuid cleared
    t.extractall(tmp_path, members=list(kept.values()))
    assert (tmp_path / "etc" / "os-release").is_file() and (tmp_path / "bin" / "sh").is_symlink()
    assert not (tmp_path.parent / "evil").exists()
