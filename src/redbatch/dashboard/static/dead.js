// Dead letters: the list of a queue, one shown with its payload, replay and purge. Uses
// state, el, api, count, when, choose and watch from app.js.
"use strict";

const RBDead = (() => {
  let shown = null; // the entry whose detail is open
  const canWrite = () => state.session.writable && state.session.logged_in;

  function bar(queue, total) {
    const items = [el("span", { id: "dead-total" }, `${count(total)} dead letters in queue ${queue}`)];
    if (!state.session.writable) {
      items.push(el("span", { class: "muted", id: "read-only-note" }, "read-only: replay and purge need redbatch dashboard --allow-writes"));
    } else if (!state.session.logged_in) {
      items.push(el("a", { href: "/login" }, "log in to replay or purge"));
    } else if (total > 0) {
      items.push(el("button", { class: "act", id: "replay-all", onclick: () => replay(queue, { all: true }) }, "replay all"));
      items.push(el("button", { class: "act danger", id: "purge", onclick: () => purge(queue, total) }, "purge"));
    }
    $("dead-bar").replaceChildren(...items);
  }

  function row(queue, letter) {
    const tr = el("tr", { class: "clickable", "data-entry": letter.entry_id, "data-request": letter.request_id || "" },
      el("td", {}, letter.entry_id), el("td", {}, letter.request_id || "-"), el("td", {}, when(letter.dead_at_ms)),
      el("td", {}, String(letter.attempt)), el("td", {}, letter.lane), el("td", {}, String(letter.replayed)),
      el("td", { class: "reason" }, letter.reason));
    tr.addEventListener("click", () => show(queue, letter.entry_id));
    const act = el("td");
    if (canWrite()) {
      act.append(el("button", {
        class: "act replay", title: "run it again",
        onclick: (event) => { event.stopPropagation(); replay(queue, { ids: [letter.entry_id] }, letter.request_id); },
      }, "replay"));
    }
    tr.append(act);
    return tr;
  }

  async function load(queue) {
    const found = await api(`/api/queues/${encodeURIComponent(queue)}/dead?limit=50`);
    bar(queue, found.total);
    if (!found.entries.some((l) => l.entry_id === shown)) $("dead-detail").hidden = true;
    $("dead").replaceChild(el("tbody", {}, ...found.entries.map((l) => row(queue, l))), $("dead").tBodies[0]);
  }

  async function refresh(o) {
    const names = o.queues.map((q) => q.name);
    state.deadQueue = choose($("dead-queue"), names, state.deadQueue);
    const q = o.queues.find((x) => x.name === state.deadQueue);
    if (!q) {
      $("dead-bar").replaceChildren();
      return;
    }
    if (q.dead !== state.deadSeen) {
      state.deadSeen = q.dead;
      await load(q.name);
    }
  }

  async function show(queue, entry) {
    shown = entry;
    const out = $("dead-detail");
    out.hidden = false;
    try {
      const found = await api(`/api/queues/${encodeURIComponent(queue)}/dead/${encodeURIComponent(entry)}`);
      const lines = [];
      for (const letter of found.dead_letters) {
        lines.push(`dead letter ${letter.entry_id} of queue ${queue}`, `  dead since  ${when(letter.dead_at_ms)}`);
        for (const [name, value] of Object.entries(letter.fields)) lines.push(`  ${name.padEnd(10)}  ${value}`);
        lines.push(...letter.payload_lines.map((line) => `  ${line}`));
      }
      out.textContent = lines.join("\n");
    } catch (error) {
      out.textContent = error.message;
    }
  }

  function report(lines) {
    $("write-result").hidden = false;
    $("write-result").textContent = lines.join("\n");
  }

  async function replay(queue, body, requestId) {
    try {
      const done = await api(`/api/queues/${encodeURIComponent(queue)}/dead/replay`, body);
      report([
        ...done.results.map((r) => (r.outcome === "replayed"
          ? `replayed ${r.request_id}: dead letter ${r.dead_entry_id} -> lane ${r.lane} as entry ${r.entry_id} (replay #${r.replayed})`
          : `${r.outcome}: ${r.dead_entry_id || r.ident}: ${r.detail}`)),
        `replayed ${done.replayed} dead letters of queue ${queue}`,
      ]);
      state.deadSeen = null;
      if (requestId && done.replayed) await watch(requestId);
    } catch (error) {
      report([`not replayed: ${error.message}`]);
    }
  }

  async function purge(queue, total) {
    if (!window.confirm(`Delete all ${total} dead letters of queue ${queue}?`)) return;
    try {
      const done = await api(`/api/queues/${encodeURIComponent(queue)}/dead/purge`, {});
      report([`purged ${done.purged} dead letters of queue ${queue}`]);
      state.deadSeen = null;
    } catch (error) {
      report([`not purged: ${error.message}`]);
    }
  }

  return { refresh };
})();
