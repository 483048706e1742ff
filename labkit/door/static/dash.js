// The instructor's dashboard of `labkit serve` (labkit/door/dash.py): the class from the
// server-sent events of /dash/events, drawn with textContent only (names and grade messages
// are never parsed as HTML); an action is prepared (what it will do and lose), then confirmed.
"use strict";
(function () {
  const table = document.getElementById("class");
  if (!table) return;
  const live = document.getElementById("live");
  const box = document.getElementById("confirm");
  const what = document.getElementById("confirm-what");
  const preview = document.getElementById("confirm-preview");
  const pick = document.getElementById("confirm-pick");
  const select = document.getElementById("confirm-checkpoint");
  const error = document.getElementById("confirm-error");
  const yes = document.getElementById("confirm-yes");
  const no = document.getElementById("confirm-no");
  let last = null; // the last snapshot
  let skew = 0; // server clock - this clock, in seconds
  let step = null; // what "Confirm" does next

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function button(label, act, student, host) {
    const b = el("button", label, "small");
    b.type = "button";
    b.dataset.act = act;
    b.dataset.student = student;
    if (host) b.dataset.host = host;
    return b;
  }
  function ago(epoch) {
    if (!epoch) return "never";
    const s = Math.max(0, Math.round(Date.now() / 1000 + skew - epoch));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return new Date(epoch * 1000).toLocaleString();
  }
  function mib(bytes) {
    return bytes === null || bytes === undefined ? "-" : (bytes / 1048576).toFixed(1) + " MiB";
  }
  function cpu(p) {
    return p === null || p === undefined ? "-" : p.toFixed(1) + "%";
  }

  // Make parent's children look like `wanted`, keeping every node that is already there and
  // alike (tag and attributes): a button under the instructor's pointer is never replaced by a
  // new one by a redraw, so a click is not lost to the live updates.
  function patch(parent, wanted) {
    const have = Array.from(parent.childNodes);
    wanted.forEach((w, i) => {
      const h = have[i];
      if (!h) parent.append(w);
      else if (h.nodeType === Node.TEXT_NODE && w.nodeType === Node.TEXT_NODE) {
        if (h.nodeValue !== w.nodeValue) h.nodeValue = w.nodeValue;
      } else if (alike(h, w)) patch(h, Array.from(w.childNodes));
      else h.replaceWith(w);
    });
    for (const extra of have.slice(wanted.length)) extra.remove();
  }
  function alike(a, b) {
    if (a.nodeType !== Node.ELEMENT_NODE || a.nodeName !== b.nodeName) return false;
    if (a.attributes.length !== b.attributes.length) return false;
    for (const at of b.attributes) if (a.getAttribute(at.name) !== at.value) return false;
    return true;
  }

  function head(cols) {
    const tr = el("tr");
    tr.append(el("th", "Student"));
    for (const c of cols) tr.append(el("th", c));
    tr.append(el("th", "Last activity"), el("th", "Last grade"), el("th", "Actions"));
    patch(table.tHead, [tr]);
  }

  function hostCell(st, col, act) {
    const td = el("td", null, "host");
    td.dataset.student = st.student;
    td.dataset.host = col;
    const h = st.hosts[col];
    const busy = act && act.ended === null && act.what !== "grade" &&
      (act.what === "restore" || act.hosts.length === 0 || act.hosts.includes(col));
    let state = h ? h.state : "missing";
    if (busy) state = act.state === "waiting" ? "waiting…" : act.verb + "…";
    const s = el("span", state, "state " + (busy ? "busy" : h ? h.state : "missing"));
    td.append(s);
    if (h) {
      td.append(el("div", cpu(h.cpu) + " · " + mib(h.memory), "muted figures"));
      if (h.id) td.title = h.name + " (" + h.id + ")";
    }
    if (!busy && last.can.reset) td.append(button("reset", "reset", st.student, col));
    return td;
  }

  function gradeCell(student) {
    const td = el("td", null, "grade");
    td.dataset.student = student;
    const g = last.grades[student];
    if (!g) {
      td.append(el("span", "not graded", "muted"));
      return td;
    }
    td.append(el("b", g.score + " / " + g.out_of, "score"), el("span", " " + ago(g.time), "muted"));
    const items = g.failures.map((f) => f.name + ": " + (f.message || "failed"));
    if (g.more) items.push("… and " + g.more + " more (the CSV has them all)");
    for (const n of g.notes) items.push(n);
    if (items.length) {
      const ul = el("ul", null, "failures");
      for (const i of items) ul.append(el("li", i));
      td.append(ul);
    }
    return td;
  }

  function actionCell(st, act) {
    const td = el("td", null, "actions");
    const status = el("div", "", "status");
    status.dataset.status = st.student;
    if (act) {
      if (act.ended === null) {
        status.textContent = act.label + ": " + (act.state === "waiting" ? "waiting for the lab" : act.verb + "…") +
          (act.progress ? " (" + act.progress + ")" : "");
        status.className = "status busy";
      } else {
        status.textContent = act.label + ": " + (act.state === "done" ? "" : "failed: ") + act.message;
        status.className = "status " + act.state;
      }
    }
    const idle = !act || act.ended !== null;
    if (idle && last.can.grade) td.append(button("grade now", "grade", st.student));
    if (idle && last.can.restore) td.append(button("restore…", "restore", st.student));
    if (idle && last.can.reset) td.append(button("reset all", "reset", st.student));
    td.append(status);
    return td;
  }

  function draw(snap) {
    last = snap;
    const view = snap.view;
    skew = view.time - Date.now() / 1000;
    const cols = view.columns;
    head(cols);
    const rows = [];
    for (const st of view.students) {
      const act = snap.actions[st.student];
      const tr = el("tr");
      tr.dataset.student = st.student;
      const who = el("td", st.student, "student");
      if (st.server) who.append(el("div", st.server, "muted"));
      tr.append(who);
      for (const c of cols) tr.append(hostCell(st, c, act));
      const seen = el("td", ago(st.last_activity), "activity");
      if (st.last_event) seen.append(el("div", st.last_event + (st.open_sessions ? " · " +
        st.open_sessions + " open" : ""), "muted"));
      tr.append(seen, gradeCell(st.student), actionCell(st, act));
      rows.push(tr);
    }
    patch(table.tBodies[0], rows);
    live.textContent = "live · " + view.students.length + " students · read " +
      new Date((view.time - skew) * 1000).toLocaleTimeString() + (view.error ? " · " + view.error : "");
    live.className = view.error ? "err" : "muted";
  }

  async function post(path, body) {
    const r = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    let data = {};
    try {
      data = await r.json();
    } catch (e) {
      data = { error: "the server said " + r.status };
    }
    if (!r.ok) throw new Error(data.error || "the server said " + r.status);
    return data;
  }

  function close() {
    box.hidden = true;
    step = null;
  }
  function open(title) {
    what.textContent = title;
    preview.replaceChildren();
    error.textContent = "";
    pick.hidden = true;
    yes.disabled = false;
    box.hidden = false;
  }
  async function prepare(req) {
    yes.disabled = true;
    try {
      const p = await post("/dash/api/prepare", req);
      what.textContent = p.what;
      preview.replaceChildren(...p.preview.map((l) => el("li", l)));
      pick.hidden = true;
      step = () => post("/dash/api/run", { token: p.token });
    } catch (e) {
      error.textContent = e.message;
      step = null;
    }
    yes.disabled = !step;
  }

  table.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button[data-act]");
    if (!b) return;
    const student = b.dataset.student;
    const act = b.dataset.act;
    if (act === "restore") {
      open(student + ": restore a checkpoint");
      yes.disabled = true;
      try {
        const r = await fetch("/dash/api/checkpoints?student=" + encodeURIComponent(student),
          { credentials: "same-origin", cache: "no-store" });
        const data = await r.json();
        if (!r.ok) throw new Error(data.error || "the server said " + r.status);
        if (!data.checkpoints.length) throw new Error(student + " has no checkpoint (labkit checkpoint save)");
        select.replaceChildren(...data.checkpoints.map((c) => {
          const o = el("option", c.name + " · " + new Date(c.created * 1000).toLocaleString() + " · " +
            c.hosts.join(", "));
          o.value = c.name;
          return o;
        }));
        pick.hidden = false;
        yes.disabled = false;
        step = async () => {
          await prepare({ action: "restore", student: student, checkpoint: select.value });
          return null; // a second confirmation follows, with what will be lost
        };
      } catch (e) {
        error.textContent = e.message;
      }
      return;
    }
    open(student + ": " + act + "…");
    await prepare({ action: act, student: student, hosts: b.dataset.host ? [b.dataset.host] : [] });
  });

  yes.addEventListener("click", async () => {
    if (!step) return;
    const run = step;
    yes.disabled = true;
    try {
      const done = await run();
      if (done !== null) close();
    } catch (e) {
      error.textContent = e.message;
      step = null;
    }
  });
  no.addEventListener("click", close);

  const source = new EventSource("/dash/events");
  source.addEventListener("class", (ev) => draw(JSON.parse(ev.data)));
  source.addEventListener("ended", () => {
    source.close();
    location.reload(); // logged out, or a new credential: the login form
  });
  source.onerror = () => {
    live.textContent = "connection lost: reconnecting…";
    live.className = "err";
    if (source.readyState === EventSource.CLOSED) setTimeout(() => location.reload(), 3000);
  };
  setInterval(() => last && draw(last), 10000); // "N s ago" moves on between readings
})();
