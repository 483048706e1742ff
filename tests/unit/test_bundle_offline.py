"""The offline parts of a bundle without a mirror or a server: the package lists' one source,
apt's simulation read, the flat repository's index, the wheelhouse's pins and target,
release/arch options, and verify naming a bad or missing file (issue 18)."""
import gzip
import hashlib
import importlib.metadata as md
import json
import re
from pathlib import Path

import pytest
import yaml

from labkit.errors import LabkitError
from labkit.images import bundle

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
            "apt": [{"release": "bookworm", "arch": "amd64", "file": "apt/bookworm-amd64.tar"}],
            "wheels": {"dir": "wheels", "files": ["labkit-0.1.0-py3-none-any.whl"],
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
