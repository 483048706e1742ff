// The terminal page of `labkit serve` (labkit/door/web.py): xterm.js on a websocket to a PTY on
// the lab server. Binary frames carry the terminal's bytes both ways; text frames are JSON
// ({"type": "resize"} out; {"type": "hello"} and {"type": "closed"} in). A dropped connection
// is retried with a growing delay for a minute, resuming the same shell (?resume=ID): the
// server keeps it 60 s and replays its recent output. Copy and paste are xterm.js's own: select
// to copy (Ctrl+Shift+C), Ctrl+Shift+V or the context menu to paste.
"use strict";
(function () {
  const el = document.getElementById("term");
  const status = document.getElementById("status");
  if (!el || typeof Terminal === "undefined" || typeof FitAddon === "undefined") {
    if (status) status.textContent = "the terminal could not load: reload the page";
    return;
  }
  const host = el.dataset.host;
  const term = new Terminal({
    cursorBlink: true,
    scrollback: 5000,
    fontSize: 15,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", "Cascadia Mono", Menlo, Consolas, monospace',
  });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  term.focus();

  const KEEP = 60000; // the server keeps a dropped terminal this long
  const encoder = new TextEncoder();
  const storeKey = "labkit-terminal-" + host;
  let id = sessionStorage.getItem(storeKey); // a reload of the page takes the same shell back
  let ws = null;
  let final = false;
  let droppedAt = 0;
  let tries = 0;

  const say = (text) => { status.textContent = text; };
  const sendJSON = (obj) => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  };
  const sendBytes = (bytes) => { // a big paste goes in pieces (the server takes 1 MiB a message)
    for (let i = 0; i < bytes.length && ws && ws.readyState === WebSocket.OPEN; i += 65536) {
      ws.send(bytes.subarray(i, i + 65536));
    }
  };

  function connect() {
    const q = new URLSearchParams({ cols: String(term.cols), rows: String(term.rows) });
    if (id) q.set("resume", id);
    const sock = new WebSocket(`wss://${location.host}/ws/${encodeURIComponent(host)}?${q}`);
    sock.binaryType = "arraybuffer";
    ws = sock;
    sock.onmessage = (ev) => {
      if (typeof ev.data !== "string") {
        term.write(new Uint8Array(ev.data));
        return;
      }
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === "hello") {
        if (m.resumed) {
          term.reset(); // the server replays the recent output onto a clean screen
        } else if (id) {
          term.write("\r\n\x1b[1m[labkit: the previous shell had ended: this is a new one]\x1b[0m\r\n");
        }
        id = m.id;
        sessionStorage.setItem(storeKey, id);
        tries = 0;
        droppedAt = 0;
        say(m.resumed ? "connected again" : "connected");
        sendJSON({ type: "resize", cols: term.cols, rows: term.rows });
      } else if (m.type === "closed") {
        final = true;
        sessionStorage.removeItem(storeKey);
        term.write(`\r\n\x1b[1m[labkit: ${m.why}]\x1b[0m\r\n`);
        say("closed: " + m.why);
      }
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      if (final) return;
      if (!droppedAt) droppedAt = Date.now();
      if (Date.now() - droppedAt > KEEP) {
        say("connection lost: reload the page for a new shell");
        term.write("\r\n\x1b[1m[labkit: connection lost]\x1b[0m\r\n");
        return;
      }
      const delay = Math.min(8000, 500 * 2 ** tries++);
      say(`connection lost: trying again in ${Math.ceil(delay / 1000)} s…`);
      setTimeout(connect, delay);
    };
  }

  term.onData((data) => sendBytes(encoder.encode(data)));
  term.onBinary((data) => sendBytes(Uint8Array.from(data, (c) => c.charCodeAt(0) & 255)));
  term.onResize(({ cols, rows }) => sendJSON({ type: "resize", cols, rows }));
  let pending = false;
  window.addEventListener("resize", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; fit.fit(); });
  });
  // for the browser tests (and the curious): the terminal, and a way to drop the connection
  window.labkitTerminal = { term, drop() { if (ws) ws.close(); }, get id() { return id; } };
  connect();
})();
