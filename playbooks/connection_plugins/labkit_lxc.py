# labkit's own Ansible connection plugin (found beside playbooks/up.yml, and by labkit's runs of
# any playbook through ANSIBLE_CONNECTION_PLUGINS, labkit/runner.py).
from __future__ import annotations

DOCUMENTATION = r"""
name: labkit_lxc
short_description: Run tasks in an LXC container with lxc-attach, here or on a lab server over SSH
description:
  - Runs each command in the container with C(lxc-attach -n NAME --clear-env -- /bin/sh -c CMD)
    (root, C(PATH), C(HOME=/root)), with the module on stdin (pipelining).
  - Files are streamed through C(cat) in the container, over stdin and stdout.
  - O(lxc_attach) is C(lxc-attach) for a container of this machine; for one of a remote lab
    server labkit sets it to its wrapper (C(labkit.lxc_ssh)) that runs C(lxc-attach) on that
    server over the server's SSH, every argument quoted, so nothing of LXC (nor its Python
    binding) is needed where Ansible runs.
options:
  remote_addr:
    description: The container's name.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_lxc_host
  lxc_attach:
    description: The lxc-attach to run (a path, or a command on PATH).
    type: str
    default: lxc-attach
    vars:
      - name: ansible_lxc_attach_executable
  lxc_path:
    description: LXC's containers folder on the container's server (C(-P)); empty for LXC's default.
    type: str
    default: ""
    vars:
      - name: ansible_lxc_path
  executable:
    description: The shell that runs each command in the container.
    type: str
    default: /bin/sh
    vars:
      - name: ansible_executable
      - name: ansible_lxc_executable
"""

# (Ansible's plugin layout: DOCUMENTATION before the imports, where ansible-doc reads it)
import os  # noqa: E402
import subprocess  # noqa: E402

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound  # noqa: E402
from ansible.module_utils.common.text.converters import to_bytes, to_native  # noqa: E402
from ansible.plugins.connection import ConnectionBase  # noqa: E402

ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "USER": "root",
       "LOGNAME": "root"}


def attach_argv(lxc_attach: str, name: str, lxc_path: str, argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` in container ``name`` as root with a clean environment."""
    out = [lxc_attach, "-n", name] + (["-P", lxc_path] if lxc_path else []) + ["--clear-env"]
    for k, v in ENV.items():
        out += ["-v", f"{k}={v}"]
    return out + ["--"] + argv


class Connection(ConnectionBase):
    """lxc-attach, on this machine or through labkit's SSH wrapper for a lab server."""

    transport = "labkit_lxc"
    has_pipelining = True
    default_user = "root"

    def _connect(self):
        super()._connect()
        self._connected = True
        return self

    def _argv(self, argv: list[str]) -> list[str]:
        return attach_argv(self.get_option("lxc_attach"), self.get_option("remote_addr"), self.get_option("lxc_path"),
                           argv)

    def _run(self, argv: list[str], stdin=subprocess.PIPE, stdout=subprocess.PIPE, in_data: bytes | None = None):
        full = self._argv(argv)
        self._display.vvv(f"EXEC {full}", host=self.get_option("remote_addr"))
        try:
            p = subprocess.Popen(full, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
        except OSError as e:
            raise AnsibleConnectionFailure(f"labkit_lxc: cannot run {full[0]}: {e}") from e
        out, err = p.communicate(in_data)
        return p.returncode, out or b"", err or b""

    def exec_command(self, cmd, in_data=None, sudoable=False):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        shell = to_native(self.get_option("executable"))
        return self._run([shell, "-c", to_native(cmd, errors="surrogate_or_strict")], in_data=in_data or b"")

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        self._display.vvv(f"PUT {in_path} TO {out_path}", host=self.get_option("remote_addr"))
        if not os.path.exists(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound(f"file or module does not exist: {in_path}")
        with open(to_bytes(in_path, errors="surrogate_or_strict"), "rb") as f:
            rc, _, err = self._run(["/bin/sh", "-c", 'cat > "$1"', "sh", to_native(out_path)], stdin=f)
        if rc != 0:
            raise AnsibleError(f"labkit_lxc: failed to put {in_path} into {out_path} (rc {rc}): {to_native(err).strip()}")

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        self._display.vvv(f"FETCH {in_path} TO {out_path}", host=self.get_option("remote_addr"))
        with open(to_bytes(out_path, errors="surrogate_or_strict"), "wb") as f:
            rc, _, err = self._run(["/bin/sh", "-c", 'cat < "$1"', "sh", to_native(in_path)], stdin=subprocess.DEVNULL,
                                   stdout=f)
        if rc != 0:
            raise AnsibleError(f"labkit_lxc: failed to fetch {in_path} into {out_path} (rc {rc}): {to_native(err).strip()}")

    def close(self):
        super().close()
        self._connected = False
