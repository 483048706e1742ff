"""The students' door: ``access`` (the handout) and ``serve`` (the SSH gate and web page)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from labkit import api
from labkit.access import creds, handout
from labkit.access.creds import serve_state
from labkit.access.identity import identity
from labkit.api.access import this_machine_address
from labkit.cli.common import handle_errors, lab_options, select
from labkit.cli.render import cell, err, out, say, table
from labkit.errors import UsageError
from labkit.lab.spec import Lab


@click.command("access")
@lab_options
@click.option("--student", "students", multiple=True, help="Only this student (repeat for more).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "html", "json"]), default="table",
              show_default=True, help="table on the terminal, csv for a mail merge, html: a printable sheet of slips.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file (made 0600) instead of stdout.")
@click.option("--rotate", is_flag=True, help="Make a new password for each student shown (the old one stops working).")
@click.option("--address", help="The address students type for their server (default: the server's name or "
                                "address in the inventory; this machine's name for a lab here).")
@click.option("--instructor", is_flag=True, help="The instructor's access to the dashboard of `labkit serve` instead: "
                                                 "its address, user and password (shown once; --rotate: a new one).")
@handle_errors
def access(lab_file: str | None, lab_name: str | None, students: tuple[str, ...], fmt: str, output: str | None,
           rotate: bool, address: str | None, instructor: bool) -> None:
    """Print the students' handout: server, SSH command, web address and password.

    A password is shown once: on the first handout after `labkit up` made it, or after
    --rotate. Afterwards the slip says it was given out; --rotate makes a new one.
    With --instructor: the dashboard's address, user `instructor` and password, likewise once.
    """
    lab = select(lab_file, lab_name)
    running = serve_state(lab.name)
    ssh_port = running.get("ssh_port") if isinstance(running.get("ssh_port"), int) else None
    https_port = running.get("https_port") if isinstance(running.get("https_port"), int) else None
    if instructor:
        _instructor(lab, students, fmt, output, rotate, address, https_port)
        return
    h = api.access(lab, list(students) or None, rotate=rotate, address=address,
                   ssh_port=ssh_port, https_port=https_port)
    if fmt == "csv":
        text = handout.csv_text(h.slips, h.ssh_fingerprint, h.tls_fingerprint)
    elif fmt == "html":
        text = handout.html_page(lab.name, h.slips, h.ssh_fingerprint, h.tls_fingerprint)
    elif fmt == "json":
        text = json.dumps({"lab": lab.name, "ssh_host_key": h.ssh_fingerprint, "tls_certificate_sha256":
                           h.tls_fingerprint, "students": handout.as_dicts(h.slips)}, indent=2) + "\n"
    else:
        text = ""
    if output:
        p = Path(output)
        p.unlink(missing_ok=True)
        p.touch(mode=0o600)
        p.write_text(text if fmt != "table" else handout.csv_text(h.slips, h.ssh_fingerprint, h.tls_fingerprint))
        say(f"handout written to {p}")
    elif fmt != "table":
        click.echo(text, nl=False)
    else:
        t = table(f"lab {lab.name}: access", ["student", "server", "ssh", "web", "password", "hosts"], keys=["student"])
        for s in h.slips:
            t.add_row(cell(s.student), cell(s.server), cell(s.ssh), cell(s.web), cell(s.password), cell(" ".join(s.hosts)))
        out.print(t)
        say(f"SSH host key {h.ssh_fingerprint}; certificate SHA-256 {h.tls_fingerprint}")
    if h.new:
        err.print(f"{len(h.new)} new password(s) shown: this is the only time; keep the handout safe", markup=False)


def _instructor(lab: Lab, students: tuple[str, ...], fmt: str, output: str | None, rotate: bool,
                address: str | None, https_port: int | None) -> None:
    """`labkit access --instructor`: the dashboard's address, user and password (once)."""
    if students:
        raise UsageError("--instructor and --student: the instructor's access is nobody's slip",
                         "run them as two commands")
    if fmt not in ("table", "json"):
        raise UsageError(f"--instructor --format {fmt}: the instructor's access is printed as a table or json")
    password = creds.make_instructor(lab.name, rotate=rotate)
    url = f"https://{address or this_machine_address()}:{https_port or lab.access.https_port}/dash"
    shown = password or "(given out; --rotate for a new one)"
    ident = identity()
    if fmt == "json":
        text = json.dumps({"lab": lab.name, "url": url, "user": creds.INSTRUCTOR, "password": shown,
                           "tls_certificate_sha256": ident.tls_fingerprint}, indent=2) + "\n"
    else:
        text = (f"dashboard: {url}\nuser: {creds.INSTRUCTOR}\npassword: {shown}\n"
                f"certificate SHA-256: {ident.tls_fingerprint}\n")
    if output:
        p = Path(output)
        p.unlink(missing_ok=True)
        p.touch(mode=0o600)
        p.write_text(text)
        say(f"the instructor's access written to {p}")
    else:
        click.echo(text, nl=False)
    if password:
        err.print("the instructor's password is shown this once: keep it safe (--rotate makes a new one and "
                  "ends the dashboard's logins)", markup=False)


@click.command("serve")
@lab_options
@click.option("--bind", default="", help="Address to listen on (default: every address).")
@click.option("--ssh-port", type=click.IntRange(1, 65535), help="SSH gate port (default: the lab file's access.ssh_port, 2222).")
@click.option("--https-port", type=click.IntRange(1, 65535), help="Web page port (default: access.https_port, 8443).")
@click.option("--server", "servers", multiple=True,
              help="Serve the students placed on this lab server (repeat; default: every server of the lab).")
@click.option("--cert", type=click.Path(dir_okay=False, exists=True), help="TLS certificate (PEM) instead of the self-signed one.")
@click.option("--key", type=click.Path(dir_okay=False, exists=True), help="Its private key (PEM).")
@handle_errors
def serve(lab_file: str | None, lab_name: str | None, bind: str, ssh_port: int | None, https_port: int | None,
          servers: tuple[str, ...], cert: str | None, key: str | None) -> None:
    """Let the lab's students into their own hosts: an SSH gate and an HTTPS page with a
    terminal per host. Runs in the foreground, logs to stderr, stops on SIGTERM or Ctrl-C."""
    # the SSH and web stacks (asyncssh, aiohttp: 0.3 s) load only when the door runs
    from labkit.door import serve as door_serve

    lab = select(lab_file, lab_name)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s labkit serve: %(message)s"))
    logger = logging.getLogger("labkit.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    ident = identity(cert, key)
    door_serve.serve(lab, ident, door_serve.Options(bind, ssh_port or lab.access.ssh_port,
                                                    https_port or lab.access.https_port, servers or None))
