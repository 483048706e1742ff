"""labkit.vm.session: the box an instructor publishes once and each ordinary account links
(nothing copied per account), and the volume name vagrant-libvirt looks for in the pool."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from labkit import paths
from labkit.errors import BoxError
from labkit.vm import session

BOX = "labkit/debian12"


def _root_box(home: Path) -> Path:
    d = home / "boxes" / "labkit-VAGRANTSLASH-debian12" / "0" / "libvirt"
    d.mkdir(parents=True)
    for f, text in (("box.img", "qcow2..."), ("metadata.json", '{"provider": "libvirt"}'), ("Vagrantfile", "#")):
        (d / f).write_text(text)
        (d / f).chmod(0o600)
    return d


def test_the_box_is_published_readable_by_all_writable_by_root_once(tmp_path, monkeypatch):
    monkeypatch.setattr(session, "SHARED_BOXES", tmp_path / "shared")
    src = _root_box(tmp_path / "root-vagrant.d")
    dest, written = session.publish_box(BOX, tmp_path / "root-vagrant.d")
    assert written and dest == tmp_path / "shared/labkit-VAGRANTSLASH-debian12/0/libvirt"
    for f in session.FILES:
        assert (dest / f).read_text() == (src / f).read_text()
        assert stat.S_IMODE((dest / f).stat().st_mode) == 0o644
    for d in (dest, dest.parent, dest.parent.parent, tmp_path / "shared"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert session.publish_box(BOX, tmp_path / "root-vagrant.d") == (dest, False)  # unchanged: not copied
    (src / "box.img").write_text("a rebuilt box")
    assert session.publish_box(BOX, tmp_path / "root-vagrant.d") == (dest, True)
    assert (dest / "box.img").read_text() == "a rebuilt box"
    with pytest.raises(BoxError) as e:
        session.publish_box("labkit/other", tmp_path / "root-vagrant.d")
    assert "labkit box build" in (e.value.hint or "")


def test_an_account_links_the_shared_box_and_is_told_who_publishes_it(tmp_path, monkeypatch):
    monkeypatch.setattr(session, "SHARED_BOXES", tmp_path / "shared")
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "account"))
    with pytest.raises(BoxError) as e:
        session.link_box(BOX)
    assert "not installed for the accounts" in e.value.message and "prepare --classroom" in (e.value.hint or "")
    _root_box(tmp_path / "root-vagrant.d")
    dest, _ = session.publish_box(BOX, tmp_path / "root-vagrant.d")
    found = session.link_box(BOX)
    mine = paths.vagrant_home() / "boxes" / "labkit-VAGRANTSLASH-debian12"
    assert mine.is_symlink() and os.readlink(mine) == str(dest.parent.parent)
    assert found.resolve() == dest.resolve()
    assert session.link_box(BOX) == found  # again: the link is kept


def test_the_volume_is_named_as_vagrant_libvirt_names_it(tmp_path):
    img = tmp_path / "box.img"
    img.write_text("x")
    os.utime(img, (1796592703, 1796592703))
    assert session.volume_name(BOX, img) == "labkit-VAGRANTSLASH-debian12_vagrant_box_image_0_1796592703_box.img"
