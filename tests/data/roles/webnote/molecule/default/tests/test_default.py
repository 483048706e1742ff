"""The role's testinfra tests, written as Molecule's templates wrote them: the hosts from
``MOLECULE_INVENTORY_FILE``."""
import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts("all")


def test_the_note_belongs_to_the_system_user(host):
    note = host.file("/srv/webnote/note.txt")
    assert note.is_file and note.user == "webnote" and note.mode == 0o644
    assert note.content_string.startswith("hello from Debian ")


def test_the_user_cannot_log_in(host):
    user = host.user("webnote")
    assert user.exists and user.shell == "/usr/sbin/nologin"


def test_the_handler_ran_once_the_note_was_written(host):
    assert host.file("/srv/webnote/reloaded").content_string.startswith("reloaded for hello from Debian")


def test_the_note_names_the_hosts_own_kernel(host):
    assert f"kernel: {host.check_output('uname -r')}" in host.file("/srv/webnote/note.txt").content_string
