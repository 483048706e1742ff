"""Item 7 of issue 26: a bundle no longer vouches for itself.

A bundle is files someone carries to the classroom (a USB stick, a shared folder, a download),
and `labkit prepare` runs what it holds as root on every lab server. Before, its SHA256SUMS
travelled inside it, so whoever could change a file could change the sums to match, and the
names its manifest carries reached Ansible as trusted templates (a box named
``{{ lookup('pipe', ...) }}`` ran as root on the controller) and a shell ``case`` pattern.

Each test performs the attack through the real CLI with a real Ansible run on this machine as
the lab server (``ansible_connection: local``, as a classroom's own machine is), on a bundle made
by the real `labkit bundle create` (one BusyBox image: no box, no Debian packages, no wheels;
test_58 carries those): (a) a self-consistent tampered bundle, an image swapped and SHA256SUMS
rewritten to match, given the digest `bundle create` printed; (b) manifests whose names would
reach a shell, a template or a path, given their own digest (a colleague's bundle, whole and
authentic, but hostile). Each checks that nothing of the bundle was used: no playbook ran, no
image was loaded, no file copied, no command run. The controls show the same checks see the
attack's effect when the bundle is trusted (its own digest): the swapped image is loaded then.

The images these tests make carry a tag of their own (``labkit-secb/...``), never one labkit or
another test uses, and are removed at the end, as is any copy in the server's bundle folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.labs import recap, run, write_inventory

pytestmark = pytest.mark.integration

LAB = "secbundle"
EVIL = f"labkit-secb/evil:{uuid.uuid4().hex[:8]}"  # the swapped image: ours alone
EVIL_FILE = "images/secbevil.tar"
SERVER_COPIES = Path("/var/lib/labkit/bundle")  # lab_server_bundle_dest: where the role copies files
DIGEST = re.compile(r"^bundle digest: (sha256:[0-9a-f]{64})$", re.M)


def _image_present(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def _write_sums(b: Path, names: list[str]) -> str:
    """SHA256SUMS for ``names`` as they are now (what whoever changes a bundle does); its digest."""
    text = "".join(f"{hashlib.sha256((b / n).read_bytes()).hexdigest()}  {n}\n" for n in names)
    (b / "SHA256SUMS").write_text(text)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _refused_before_use(p: subprocess.CompletedProcess, code: int, *expected: str) -> None:
    assert "play:" not in p.stdout and "recap:" not in p.stdout, f"a playbook ran:\n{p.stdout}"
    assert p.returncode == code, f"exit {p.returncode}, not {code}\n{p.stdout}\n{p.stderr}"
    for text in expected:
        assert text in p.stderr, p.stderr


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A bundle made by `labkit bundle create`, the digest it printed, and an inventory whose one
    lab server is this machine."""
    d = tmp_path_factory.mktemp("secbundle")
    lab = d / "lab.yml"
    lab.write_text(f"name: {LAB}\nstudents: [s01]\ncontainers: [busybox]\nvm: {{enabled: false}}\n")
    run("images", "build", "busybox")
    created = run("bundle", "create", "-f", str(lab), "--no-box", "--no-debs", "--no-wheels", str(d / "bundle"))
    m = DIGEST.search(created.stdout)
    assert m, created.stdout
    inv = d / "hosts.json"
    write_inventory(inv, {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}})
    return {"dir": d, "bundle": d / "bundle", "digest": m[1], "inv": str(inv)}


@pytest.fixture(scope="module")
def tampered(made):
    """The made bundle, changed as an attacker with write access to it would: its image replaced
    by one of ours (EVIL, saved then removed here, so that only loading it brings it back), the
    manifest and SHA256SUMS rewritten to match: a whole, self-consistent, malicious bundle."""
    d = made["dir"]
    subprocess.run(["docker", "build", "-q", "-t", EVIL, "-"], input="FROM labkit/busybox:1.35\nLABEL labkit.test=secb-evil\n",
                   text=True, capture_output=True, check=True)
    b = d / "tampered"
    try:
        shutil.copytree(made["bundle"], b)
        (b / "images" / "busybox.tar").unlink()
        subprocess.run(["docker", "save", "-o", str(b / EVIL_FILE), EVIL], check=True)
    finally:
        subprocess.run(["docker", "rmi", EVIL], capture_output=True)
    assert not _image_present(EVIL)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["images"] = [{"distro": "busybox", "image": EVIL, "file": EVIL_FILE, "recipe": "evil"}]
    (b / "manifest.json").write_text(json.dumps(manifest))
    own = _write_sums(b, [EVIL_FILE, "manifest.json"])
    yield {"bundle": b, "own_digest": own}
    subprocess.run(["docker", "rmi", "-f", EVIL], capture_output=True)
    (SERVER_COPIES / EVIL_FILE).unlink(missing_ok=True)


def test_the_bundle_as_made_is_used_with_the_digest_create_printed(made):
    """The control: the untouched bundle and its digest pass (what the attacks below change is
    what is refused)."""
    p = run("prepare", "-i", made["inv"], "--bundle", str(made["bundle"]), "--bundle-digest", made["digest"])
    assert recap(p.stdout)["failures"] == 0
    out = run("bundle", "load", str(made["bundle"]), "--digest", made["digest"]).stdout
    assert "labkit/busybox:1.35: present with the same recipe, skipped" in out


def test_a_tampered_bundle_is_refused_before_anything_of_it_is_used(made, tampered):
    """(a) The attack: a self-consistent tampered bundle given the digest `create` printed."""
    b = str(tampered["bundle"])
    p = run("prepare", "-i", made["inv"], "--bundle", b, "--bundle-digest", made["digest"], check=False)
    assert not _image_present(EVIL), f"prepare loaded the tampered bundle's image\n{p.stdout}"
    assert not (SERVER_COPIES / EVIL_FILE).exists(), "prepare copied the tampered image to the server"
    _refused_before_use(p, 4, "SHA256SUMS does not match the bundle digest given", made["digest"])
    p = run("bundle", "load", b, "--digest", made["digest"], check=False)
    assert not _image_present(EVIL), f"bundle load loaded the tampered bundle's image\n{p.stdout}"
    _refused_before_use(p, 4, "SHA256SUMS does not match the bundle digest given")


def test_without_its_digest_a_bundle_is_refused(made, tampered):
    for argv in (["prepare", "-i", made["inv"], "--bundle", str(tampered["bundle"])],
                 ["bundle", "load", str(tampered["bundle"])]):
        p = run(*argv, check=False)
        assert not _image_present(EVIL), f"{argv[0]} loaded the tampered bundle's image without a digest"
        _refused_before_use(p, 2, "needs its digest", "--insecure-skip-digest")


def test_a_file_sha256sums_does_not_list_is_refused(made, tmp_path):
    b = tmp_path / "extra"
    shutil.copytree(made["bundle"], b)
    (b / "images" / "zz-extra.tar").write_bytes(b"not listed")
    p = run("prepare", "-i", made["inv"], "--bundle", str(b), "--bundle-digest", made["digest"], check=False)
    _refused_before_use(p, 4, "holds images/zz-extra.tar: not a file SHA256SUMS lists")


def test_with_the_tampered_bundles_own_digest_its_image_is_loaded(made, tampered):
    """The control of (a): trusted (its own digest), the tampered bundle is used, and the checks
    above see it (the image is loaded through the role's copy, checked against the sums)."""
    p = run("prepare", "-i", made["inv"], "--bundle", str(tampered["bundle"]), "--bundle-digest",
            tampered["own_digest"])
    assert recap(p.stdout)["failures"] == 0 and recap(p.stdout)["changed"] > 0
    assert _image_present(EVIL) and (SERVER_COPIES / EVIL_FILE).is_file()


# (b) names that would reach a shell, a template or a path, in an authentic bundle (its own digest)
NAMES = {
    "box name with shell metacharacters": ("box", "name", "x; touch {mark}"),
    "box name that is a template": ("box", "name", "{{{{ lookup('pipe', 'id >\"$SECB_MARK\"') }}}}"),
    "image name with a command substitution": ("images", "image", "labkit/busybox:1.35$(touch {mark})"),
    "distro that is a path": ("images", "distro", "../../../../{mark}"),
}


@pytest.mark.parametrize("part, key, payload", NAMES.values(), ids=NAMES.keys())
def test_a_name_that_could_reach_a_shell_a_template_or_a_path_is_refused(made, tmp_path, part, key, payload):
    mark = tmp_path / "pwned"
    b = tmp_path / "hostile"
    shutil.copytree(made["bundle"], b)
    manifest = json.loads((b / "manifest.json").read_text())
    (b / "box").mkdir()
    (b / "box" / "x.box").write_bytes(b"a box")
    manifest["box"] = {"name": "labkit/debian12", "file": "box/x.box", "recipe": "r"}
    entry = manifest["box"] if part == "box" else manifest["images"][0]
    entry[key] = payload.format(mark=mark)
    (b / "manifest.json").write_text(json.dumps(manifest))
    digest = _write_sums(b, [e["file"] for e in manifest["images"]] + ["box/x.box", "manifest.json"])
    env = dict(os.environ, SECB_MARK=str(mark))
    p = run("prepare", "-i", made["inv"], "--bundle", str(b), "--bundle-digest", digest, check=False, env=env)
    assert not mark.exists(), f"the bundle's {part}.{key} ran a command: {mark} was made\n{p.stdout}"
    _refused_before_use(p, 4, f"{part}{'.' if part == 'box' else '[0].'}{key} is ")
