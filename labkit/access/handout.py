"""The handout of `labkit access`: per student, where and how to get in. CSV for a mail merge
or a gradebook, HTML as a printable sheet of slips (one per student, cut along the lines);
the terminal table is drawn by labkit.cli.render."""
from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass

GIVEN = "(given out; --rotate for a new one)"


@dataclass(frozen=True)
class Slip:
    student: str
    server: str        # the lab server the student's hosts are on
    address: str       # what the student types: that server's name or address
    ssh_port: int
    https_port: int
    hosts: tuple[str, ...]
    password: str      # shown once (new or rotated); GIVEN afterwards
    key: bool          # a public key of theirs is on file

    @property
    def ssh(self) -> str:
        port = "" if self.ssh_port == 22 else f"-p {self.ssh_port} "
        return f"ssh {port}{self.student}@{self.address}"

    @property
    def web(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"https://{host}" + ("" if self.https_port == 443 else f":{self.https_port}") + "/"


def csv_text(slips: Sequence[Slip], ssh_fingerprint: str, tls_fingerprint: str) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["student", "server", "ssh", "web", "password", "ssh_key", "hosts",
                "ssh_host_key_sha256", "tls_certificate_sha256"])
    for s in slips:
        w.writerow([s.student, s.server, s.ssh, s.web, s.password, "yes" if s.key else "no", " ".join(s.hosts),
                    ssh_fingerprint, tls_fingerprint])
    return out.getvalue()


def as_dicts(slips: Sequence[Slip]) -> list[dict[str, object]]:
    return [{**asdict(s), "ssh": s.ssh, "web": s.web} for s in slips]


_CSS = """
body { font-family: sans-serif; margin: 1cm; }
.slip { border: 1px dashed #777; padding: 0.5cm 0.7cm; margin-bottom: 0.6cm; page-break-inside: avoid;
        break-inside: avoid; }
.slip h2 { margin: 0 0 0.3cm 0; font-size: 1.2em; }
.slip table { border-collapse: collapse; }
.slip td { padding: 0.1cm 0.4cm 0.1cm 0; vertical-align: top; }
.slip td:first-child { color: #555; white-space: nowrap; }
code { font-size: 1.05em; }
.fp { font-size: 0.75em; color: #444; word-break: break-all; }
@media print { .noprint { display: none; } }
"""


def html_page(lab: str, slips: Sequence[Slip], ssh_fingerprint: str, tls_fingerprint: str) -> str:
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>labkit {e(lab)}: access</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<p class='noprint'>Lab <b>{e(lab)}</b>: {len(slips)} slips; print and cut along the lines.</p>"]
    for s in slips:
        parts.append(
            "<div class='slip'>"
            f"<h2>labkit lab {e(lab)}: student {e(s.student)}</h2><table>"
            f"<tr><td>Terminal</td><td><code>{e(s.ssh)}</code> &nbsp;then a host: "
            f"<code>{e(s.ssh)} {e(s.hosts[0] if s.hosts else 'HOST')}</code></td></tr>"
            f"<tr><td>Browser</td><td><code>{e(s.web)}</code></td></tr>"
            f"<tr><td>Password</td><td><code>{e(s.password)}</code></td></tr>"
            + ("<tr><td>Key</td><td>your SSH key on file also works</td></tr>" if s.key else "")
            + f"<tr><td>Your hosts</td><td>{e(', '.join(s.hosts) or '(none running yet)')}</td></tr>"
            f"<tr><td>Check</td><td class='fp'>SSH host key {e(ssh_fingerprint)}<br>"
            f"certificate SHA-256 {e(tls_fingerprint)}</td></tr>"
            "</table></div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
