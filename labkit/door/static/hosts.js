// The host list of `labkit serve`'s page: states refreshed every 5 s from /api/hosts (a login
// that ended, by logging out or by the instructor, brings the login page back).
"use strict";
(function () {
  const tbody = document.getElementById("hosts");
  if (!tbody) return;
  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }
  function row(h) {
    const tr = document.createElement("tr");
    const name = cell(h.terminal ? "" : h.short);
    if (h.terminal) {
      const a = document.createElement("a");
      a.href = h.terminal;
      a.target = "_blank";
      a.rel = "noopener";
      a.textContent = h.short;
      name.appendChild(a);
    }
    tr.append(name, cell(h.kind), cell(h.distro), cell(h.state));
    return tr;
  }
  async function refresh() {
    let r;
    try {
      r = await fetch("/api/hosts", { credentials: "same-origin", cache: "no-store" });
    } catch (e) {
      return; // the server is away for a moment: try again later
    }
    if (r.status === 401) {
      location.reload();
      return;
    }
    if (!r.ok) return;
    const data = await r.json();
    if (!data.hosts.length) {
      const td = cell("No hosts yet: ask your instructor.");
      td.colSpan = 4;
      td.className = "muted";
      const tr = document.createElement("tr");
      tr.append(td);
      tbody.replaceChildren(tr);
      return;
    }
    tbody.replaceChildren(...data.hosts.map(row));
  }
  setInterval(refresh, 5000);
})();
