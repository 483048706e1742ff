"""The offline parts of a bundle without a mirror or a server: the package lists' one source,
apt's simulation read, the flat repository's index, the wheelhouse's pins and target,
release/arch options, and verify naming a bad or missing file (issue 18); the bundle's digest,
checked before anything else, files SHA256SUMS does not list, and the names a manifest may
carry (issue 26, item 7; tests/security/test_bundle_trust.py attacks it through the CLI)."""
import gzip
import hashlib
import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labkit.errors import LabkitError
from labkit.images import bundle, trust

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "lab_server"


def test_the_role_defaults_are_the_one_list_of_server_packages():
    lists = bundle.role_packages()
    d = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert lists["server"] == d["lab_server_packages"] and "docker.io" in lists["server"]
    assert lists["vm"] == d["lab_server_vm_packages"] and {"vagrant-libvirt", "libvirt-daemon-system"} <= set(lists["vm"])
    # Podman's, with what rootless Podman needs (newuidmap, its network), as `prepare --podman` installs
    assert lists["podman"] == d["lab_server_podman_packages"] and {"podman", "uidmap", "slirp4netns"} <= set(
        lists["podman"])
    assert set(lists) - {"server", "vm"} == {k[len("lab_server_"):-len("_packages")] for k in d
                                             if re.fullmatch(r"lab_server_[a-z0-9]+_packages", k)} - {"vm"}
    # and the role installs packages in one place only (tasks/packages.yml), from those lists
    for f in (ROLE / "tasks").glob("*.yml"):
        if f.name != "packages.yml":
            assert "ansible.builtin.apt:" not in f.read_text(), f"{f.name} installs packages on its own"
    main = (ROLE / "tasks" / "main.yml").read_text()
    assert "lab_server_packages + (lab_server_vm_packages if lab_server_with_vm else [])" in main
    # every engine's list the bundle carries is one the role installs (with `prepare --ENGINE`)
    for e in set(lists) - {"server", "vm"}:
        assert f"(lab_server_{e}_packages if lab_server_{e} else [])" in main, e


def test_a_bundle_carries_every_engines_packages_and_the_vm_stack_with_a_box():
    lists = {"server": ["docker.io", "python3-requests"], "podman": ["podman", "uidmap", "runc"],
             "lxc": ["lxc", "uidmap"], "vm": ["qemu-utils", "vagrant", "python3-venv"]}
    # the engines' always (whatever engines the lab uses), each package once, in the lists' order
    assert bundle.server_packages(lists, box=False) == [
        "docker.io", "python3-requests", "podman", "uidmap", "runc", "lxc", "python3-venv"]
    assert bundle.server_packages(lists, box=True) == [
        "docker.io", "python3-requests", "podman", "uidmap", "runc", "lxc", "qemu-utils", "vagrant", "python3-venv"]
    # a role with no engine besides Docker: the packages as before the engines
    assert bundle.server_packages({"server": ["docker.io"], "vm": ["vagrant"]}, box=False) == ["docker.io",
                                                                                                  "python3-venv"]


def test_the_package_lists_are_read_by_their_keys_and_a_missing_one_is_named(tmp_path, monkeypatch):
    (tmp_path / "lab_server" / "defaults").mkdir(parents=True)
    f = tmp_path / "lab_server" / "defaults" / "main.yml"
    monkeypatch.setattr(bundle, "roles_dir", lambda: tmp_path)
    f.write_text("lab_server_packages: [docker.io]\nlab_server_vm_packages: [vagrant]\n"
                 "lab_server_podman_packages: [podman]\nlab_server_podman: false\nlab_server_packages_x: [y]\n")
    assert bundle.role_packages() == {"server": ["docker.io"], "vm": ["vagrant"], "podman": ["podman"]}
    f.write_text("lab_server_packages: [docker.io]\nlab_server_podman_packages: [podman]\n")
    with pytest.raises(LabkitError, match="cannot read the lab servers' package lists.*lab_server_vm_packages"):
        bundle.role_packages()
    f.write_text("- not a mapping\n")
    with pytest.raises(LabkitError, match="cannot read the lab servers' package lists"):
        bundle.role_packages()


SIMULATION = """\
NOTE: This is only a simulation!
Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []
Inst liblzma5 [5.4.1-0.2] (5.4.1-1+deb12u2 Debian-Security:12/oldstable-security [amd64])
Inst python3-requests (2.28.1+dfsg-1 Debian:12.15/oldstable [all])
Inst libfoo (1:2.0-1 Debian:12.15/oldstable [amd64])
Conf libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])
"""


def test_apt_simulation_is_read_as_package_version_arch():
    assert bundle.parse_simulation(SIMULATION) == [
        ("gcc-12-base", "12.2.0-14+deb12u1", "amd64"), ("libc6", "2.36-9+deb12u14", "amd64"),
        ("liblzma5", "5.4.1-1+deb12u2", "amd64"), ("python3-requests", "2.28.1+dfsg-1", "all"),
        ("libfoo", "1:2.0-1", "amd64")]


RECORDS = """\
Package: libfoo
Version: 1:2.0-1
Architecture: amd64
Filename: pool/main/f/foo/libfoo_2.0-1_amd64.deb
Size: 10
SHA256: aaaa

Package: libfoo
Version: 1:2.0-1
Architecture: amd64
Filename: pool/main/f/foo/libfoo_2.0-1_amd64.deb
Size: 10
SHA256: aaaa

Package: bar
Version: 3
Architecture: all
Filename: pool/main/b/bar/bar_3_all.deb
Size: 20
SHA256: bbbb
"""


def test_the_flat_index_points_at_the_repositorys_pool_once_per_package():
    index, sha = bundle.packages_index(RECORDS, {"libfoo=1:2.0-1": "libfoo_1_2.0-1_amd64.deb",
                                                 "bar=3": "bar_3_all.deb"})
    assert re.findall(r"^Filename: (.*)$", index, re.M) == ["pool/libfoo_1_2.0-1_amd64.deb", "pool/bar_3_all.deb"]
    assert sha == {"libfoo=1:2.0-1": "aaaa", "bar=3": "bbbb"}
    with pytest.raises(LabkitError, match="no record of baz=1"):
        bundle.packages_index(RECORDS, {"baz=1": "baz_1_all.deb"})


def test_release_file_hashes_the_indexes():
    data = b"Package: bar\n"
    text = bundle.release_file({"Packages": data, "Packages.gz": gzip.compress(data)},
                               bundle.Target("bookworm", "amd64"))
    assert "Codename: bookworm" in text and "Architectures: amd64 all" in text
    assert f" {hashlib.sha256(data).hexdigest()} {len(data):>10} Packages\n" in text


def test_release_and_arch_options_make_every_pair_and_are_checked():
    T = bundle.Target
    assert bundle.targets_from_options(["bookworm", "trixie"], ["amd64"]) == [T("bookworm", "amd64"),
                                                                           T("trixie", "amd64")]
    with pytest.raises(LabkitError, match="--release 'Bookworm 12'"):
        bundle.targets_from_options(["Bookworm 12"], ["amd64"])
    with pytest.raises(LabkitError, match="--arch 'amd64;rm'"):
        bundle.targets_from_options(["bookworm"], ["amd64;rm"])
    with pytest.raises(LabkitError, match=r"--release 'bookworm\\n'"):  # a trailing newline is no name either
        bundle.targets_from_options(["bookworm\n"], ["amd64"])


def test_a_servers_release_and_arch_are_checked_before_they_become_apt_lines_and_paths(tmp_path):
    inv = tmp_path / "hosts.json"
    inv.write_text(json.dumps({"all": {"children": {"lab_servers": {"hosts": {"s2": {
        "ansible_host": "192.0.2.1", "labkit_release": "../../x", "labkit_arch": "amd64"}}}}}}))
    with pytest.raises(LabkitError, match=r"lab server s2: '\.\./\.\./x'/'amd64' \(its labkit_release/labkit_arch"):
        bundle.targets_from_inventory(inv)


def test_wheelhouse_pins_labkits_runtime_dependencies_at_the_installed_versions():
    pins = dict(p.split("==") for p in bundle.pinned_requirements("3.11", "x86_64"))
    for name in ("ansible-core", "ansible-runner", "click", "pydantic", "docker", "python-vagrant"):
        assert pins[name] == md.version(name), name
    assert "hypothesis" not in pins and "ruff" not in pins and "matplotlib" not in pins  # test/lint extras
    assert "labkit" not in pins


def test_wheelhouse_target_follows_the_release():
    T = bundle.Target
    assert bundle.wheel_target([T("bookworm", "amd64")], None) == ("3.11", "x86_64", (2, 36))
    assert bundle.wheel_target([T("trixie", "arm64")], None) == ("3.13", "aarch64", (2, 41))
    assert bundle.wheel_target([T("bookworm", "amd64")], "3.12")[0] == "3.12"
    with pytest.raises(LabkitError, match="no wheels for architecture riscv64"):
        bundle.wheel_target([T("trixie", "riscv64")], None)
    with pytest.raises(LabkitError, match="needs Python >= 3.11"):
        bundle.wheel_target([T("bookworm", "amd64")], "3.9")


def _bundle(tmp_path: Path, manifest: dict, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    names = [*files, "manifest.json"]
    (tmp_path / "SHA256SUMS").write_text(
        "".join(f"{hashlib.sha256((tmp_path / n).read_bytes()).hexdigest()}  {n}\n" for n in names))
    return tmp_path


MANIFEST = {"format": 2, "images": [], "box": None,
            "apt": [{"release": "bookworm", "arch": "amd64", "file": "apt/bookworm-amd64.tar",
                     "packages": ["docker.io"], "closure": ["docker.io", "libc6"], "debs": 2, "debs_bytes": 7}],
            "wheels": {"dir": "wheels", "python": "3.11", "machine": "x86_64", "files": ["labkit-0.1.0-py3-none-any.whl"],
                       "requirements": "wheels/requirements.txt", "labkit": "labkit-0.1.0-py3-none-any.whl"}}
FILES = {"apt/bookworm-amd64.tar": b"repo", "wheels/labkit-0.1.0-py3-none-any.whl": b"whl",
         "wheels/requirements.txt": b"labkit==0.1.0\n"}


def test_verify_accepts_a_whole_bundle_and_names_a_bad_file(tmp_path):
    b = _bundle(tmp_path, MANIFEST, FILES)
    assert bundle.verify(b)["apt"][0]["release"] == "bookworm"
    assert bundle.bundle_files(MANIFEST) == list(FILES)
    (b / "wheels" / "labkit-0.1.0-py3-none-any.whl").write_bytes(b"other")
    with pytest.raises(LabkitError, match="wheels/labkit-0.1.0-py3-none-any.whl does not match its checksum"):
        bundle.verify(b)
    (b / "wheels" / "labkit-0.1.0-py3-none-any.whl").unlink()
    with pytest.raises(LabkitError, match="listed in SHA256SUMS but missing"):
        bundle.verify(b)


def test_verify_names_a_file_the_manifest_lists_but_the_sums_do_not(tmp_path):
    b = _bundle(tmp_path, MANIFEST, FILES)
    sums = [ln for ln in (b / "SHA256SUMS").read_text().splitlines() if "bookworm-amd64.tar" not in ln]
    (b / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    with pytest.raises(LabkitError, match="apt/bookworm-amd64.tar named in manifest.json but not in SHA256SUMS"):
        bundle.verify(b)


def test_verify_names_a_malformed_sums_line(tmp_path):
    b = _bundle(tmp_path, MANIFEST, FILES)
    (b / "SHA256SUMS").write_text((b / "SHA256SUMS").read_text() + "garbage\n")
    with pytest.raises(LabkitError, match=r"SHA256SUMS:5: not a checksum line"):
        bundle.verify(b)


def _digest(b: Path) -> str:
    return "sha256:" + hashlib.sha256((b / "SHA256SUMS").read_bytes()).hexdigest()


def test_the_digest_is_that_of_sha256sums_and_is_checked_before_anything_else(tmp_path):
    b = _bundle(tmp_path, MANIFEST, FILES)
    digest = _digest(b)
    assert bundle.digest_of(b) == digest
    v = bundle.check(b, digest)
    assert v.digest == digest and v.sums["apt/bookworm-amd64.tar"] == hashlib.sha256(b"repo").hexdigest()
    assert set(v.sums) == {*FILES, "manifest.json"}
    # a self-consistent change (a file and SHA256SUMS rewritten to match) is another digest
    (b / "apt" / "bookworm-amd64.tar").write_bytes(b"evil repo")
    _bundle(tmp_path, MANIFEST, {**FILES, "apt/bookworm-amd64.tar": b"evil repo"})
    assert bundle.verify(b)["format"] == 2  # whole, as far as its own SHA256SUMS says
    with pytest.raises(LabkitError, match=r"SHA256SUMS does not match the bundle digest given \(sha256:") as e:
        bundle.check(b, digest)
    assert e.value.exit_code == 4
    # the digest comes first: a bundle whose files are gone is refused for its digest, not its files
    (b / "wheels" / "labkit-0.1.0-py3-none-any.whl").unlink()
    (b / "manifest.json").write_text("not json")
    with pytest.raises(LabkitError, match="does not match the bundle digest given"):
        bundle.check(b, digest)


@pytest.mark.parametrize("digest", ["3f" * 32, "sha256:" + "3F" * 32, "sha256:" + "3f" * 31, "sha1:" + "3f" * 20,
                                    "sha256:" + "3f" * 32 + "\n"])
def test_a_malformed_digest_is_bad_input(tmp_path, digest):
    b = _bundle(tmp_path, MANIFEST, FILES)
    with pytest.raises(LabkitError, match="not sha256: and 64 hexadecimal digits") as e:
        bundle.check(b, digest)
    assert e.value.exit_code == 2


def test_the_digest_is_required_unless_explicitly_skipped(tmp_path):
    b = _bundle(tmp_path, MANIFEST, FILES)
    with pytest.raises(LabkitError, match=r"needs its digest \(--bundle-digest sha256:\.\.\.\)") as e:
        bundle.authenticate(b, None)
    assert e.value.exit_code == 2 and "--insecure-skip-digest" in str(e.value)
    with pytest.raises(LabkitError, match=r"needs its digest \(--digest"):
        bundle.authenticate(b, None, flag="--digest")
    said: list[str] = []
    assert bundle.authenticate(b, None, insecure=True, log=said.append).digest is None
    assert len(said) == 1 and said[0].startswith("WARNING") and "--insecure-skip-digest" in said[0]
    with pytest.raises(LabkitError, match="both given"):
        bundle.authenticate(b, _digest(b), insecure=True)
    assert bundle.authenticate(b, _digest(b)).manifest["apt"][0]["closure"] == ["docker.io", "libc6"]


def test_a_file_sha256sums_does_not_list_is_refused(tmp_path):
    b = _bundle(tmp_path, MANIFEST, FILES)
    digest = _digest(b)
    (b / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"x")
    with pytest.raises(LabkitError, match=r"holds wheels/evil-1.0-py3-none-any.whl: not a file SHA256SUMS lists"):
        bundle.check(b, digest)
    (b / "wheels" / "evil-1.0-py3-none-any.whl").unlink()
    (b / "hooks").mkdir()
    with pytest.raises(LabkitError, match=r"holds hooks/ \(a folder\): not a file SHA256SUMS lists"):
        bundle.check(b, digest)
    (b / "hooks").rmdir()
    (b / "box").mkdir()  # a part's folder, empty (a bundle without a box): allowed
    assert bundle.check(b, digest).manifest["box"] is None


def test_links_and_special_files_are_refused(tmp_path):
    b = _bundle(tmp_path / "b", MANIFEST, FILES)
    digest = _digest(b)
    whl = b / "wheels" / "labkit-0.1.0-py3-none-any.whl"
    outside = tmp_path / "outside.whl"
    outside.write_bytes(b"whl")  # the same bytes: only the link is wrong
    whl.unlink()
    whl.symlink_to(outside)
    with pytest.raises(LabkitError, match=r"holds wheels/labkit-0.1.0-py3-none-any.whl \(a symbolic link\)"):
        bundle.check(b, digest)
    whl.unlink()
    os.mkfifo(whl)  # would block a reader that does not check
    with pytest.raises(LabkitError, match="labkit-0.1.0-py3-none-any.whl cannot be read as a file"):
        bundle.check(b, digest)
    whl.unlink()
    whl.write_bytes(b"whl")
    (tmp_path / "elsewhere").mkdir()
    (b / "images").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LabkitError, match=r"holds images \(a symbolic link\)"):
        bundle.check(b, digest)


@pytest.mark.parametrize("line", ["../../etc/passwd", "/etc/passwd", "images/../../x.tar", "images/a b.tar",
                                  "images/x.tar\r", "notes.txt", "images/sub/x.tar"])
def test_a_sums_line_naming_a_path_outside_the_parts_is_refused(tmp_path, line):
    b = _bundle(tmp_path, MANIFEST, FILES)
    with (b / "SHA256SUMS").open("a") as f:
        f.write(f"{'0' * 64}  {line}\n")
    with pytest.raises(LabkitError, match=r"SHA256SUMS:5: (.* is no file a bundle holds|not a checksum line)"):
        bundle.check(b, _digest(b))


BOX = {"name": "labkit/debian12", "file": "box/labkitdebian12.box", "recipe": "ab" * 32}
IMAGE = {"distro": "debian:12", "image": "labkit/debian:12", "file": "images/debian12.tar", "recipe": "eee6d4bc"}
BAD = ["x; touch /tmp/pwned", "{{ lookup('pipe', 'id') }}", "x$(id)", "x`id`", "a\nb", "-rf", "../x", "a/b/c",
       "x'y", 'x"y', "x y", "%{x}", ""]


def _manifest(**kw):
    return {**MANIFEST, "images": [dict(IMAGE)], "box": dict(BOX), **kw}


def test_a_manifest_with_valid_names_is_taken_and_rebuilt_from_them():
    m = _manifest()
    m["box"]["name"] = "bento/ubuntu-22.04"
    m["images"][0]["image"] = "localhost:5000/labkit/busybox:1.35"
    out = bundle.check_manifest(m)
    assert out["box"] == m["box"] and out["images"] == m["images"] and out["wheels"]["python"] == "3.11"
    assert bundle.check_manifest({"format": 1, "images": [], "box": None}) == {
        "format": 1, "images": [], "box": None, "apt": [], "wheels": None}


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("field", ["box.name", "images.image", "images.distro", "box.file", "images.file",
                                   "apt.release", "apt.closure", "wheels.files"])
def test_every_name_of_the_manifest_is_checked(field, bad):
    m = _manifest()
    part, key = field.split(".")
    if part == "box":
        m["box"][key] = bad
    elif part == "images":
        m["images"][0][key] = bad
    elif key == "closure":
        m["apt"] = [{**MANIFEST["apt"][0], "closure": ["libc6", bad]}]
    elif key == "release":
        m["apt"] = [{**MANIFEST["apt"][0], "release": bad}]
    else:
        m["wheels"] = {**MANIFEST["wheels"], "files": [MANIFEST["wheels"]["labkit"], bad]}
    with pytest.raises(LabkitError) as e:
        bundle.check_manifest(m, "m.json")
    assert e.value.exit_code == 4 and str(e.value).startswith(f"m.json: {part}"), str(e.value)
    assert repr(bad)[:40] in str(e.value) or "not a" in str(e.value)


@pytest.mark.parametrize("change, match", [
    ({"format": 3}, "this labkit reads formats 1 to 2"), ({"format": True}, "format True"),
    ({"extra": 1}, "unknown key"), ({"images": {}}, "images is {}, not a list"),
    ({"box": {"name": "x", "file": "box/x.box"}}, "box has no recipe"),
    ({"apt": [{**MANIFEST["apt"][0], "file": "apt/trixie-amd64.tar"}]}, "not apt/bookworm-amd64.tar"),
    ({"apt": [{**MANIFEST["apt"][0], "debs": -1}]}, "not a count"),
    ({"wheels": {**MANIFEST["wheels"], "requirements": "../r.txt"}}, "not wheels and wheels/requirements.txt"),
    ({"wheels": {**MANIFEST["wheels"], "labkit": "other-1-py3-none-any.whl"}}, "is not one of its files"),
])
def test_the_manifests_shape_is_checked(change, match):
    with pytest.raises(LabkitError, match=re.escape(match)):
        bundle.check_manifest({**_manifest(), **change})


def test_a_file_changed_after_the_check_is_refused_when_used(tmp_path):
    b = _bundle(tmp_path, MANIFEST, FILES)
    v = bundle.check(b, _digest(b))
    with trust.opened(b, "apt/bookworm-amd64.tar", v.sums) as f:
        assert f.read() == b"repo"  # what was hashed is what is read
    (b / "apt" / "bookworm-amd64.tar").write_bytes(b"swapped")
    with pytest.raises(LabkitError, match="apt/bookworm-amd64.tar changed after it was checked"):
        with trust.opened(b, "apt/bookworm-amd64.tar", v.sums):
            pass


def test_the_servers_apt_part_is_cut_from_a_checked_copy_only(tmp_path):
    """apt_subset.py (run on the controller by the role) refuses a repository whose bytes are
    not those of the checked sum it is given; it no longer reads the bundle's SHA256SUMS."""
    b = _bundle(tmp_path / "b", MANIFEST, FILES)
    (b / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(b'repo').hexdigest()}  {n}\n" for n in FILES))
    status = tmp_path / "status"
    status.write_text("")
    p = subprocess.run([sys.executable, str(ROLE / "files" / "apt_subset.py"), "--bundle", str(b), "--file",
                        "apt/bookworm-amd64.tar", "--sha256", hashlib.sha256(b"other").hexdigest(), "--status",
                        str(status), "--arch", "amd64", "--out", str(tmp_path / "out.tar"), "docker.io"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "does not match the bundle's checked SHA256SUMS" in p.stderr, p.stderr
    assert not (tmp_path / "out.tar").exists()


def test_the_role_takes_the_checked_manifest_and_sums_and_never_reads_them_from_the_bundle():
    tasks = "\n".join(f.read_text() for f in (ROLE / "tasks").glob("*.yml"))
    assert "manifest.json" not in tasks and "SHA256SUMS'" not in tasks and "/SHA256SUMS" not in tasks
    assert "lab_server_bundle_sums[lab_server_image.file]" in tasks
    assert "lab_server_bundle_sums[lab_server_box.file]" in tasks
    assert "'--sha256', lab_server_bundle_sums[lab_server_repo.file]" in tasks
    # the one shell line a bundle's name reaches is quoted (the name is checked before, too)
    assert "{{ lab_server_box_volume_prefix | quote }}*)" in (ROLE / "tasks" / "vm.yml").read_text()
