// tally coordinator dashboard: polls /api/state and redraws. Written by
// hand, no build step; every value goes into the page as text, never as
// markup.
"use strict";

(function () {
  const $ = id => document.getElementById(id);
  const POLL_MS = 2000;
  let lastOK = null;

  function td(text, cls, attrs) {
    const c = document.createElement("td");
    if (cls) c.className = cls;
    c.textContent = text;
    for (const k in attrs || {}) c.setAttribute(k, attrs[k]);
    return c;
  }
  function row(cells, attrs) {
    const r = document.createElement("tr");
    for (const k in attrs || {}) r.setAttribute(k, attrs[k]);
    cells.forEach(c => r.appendChild(c));
    return r;
  }
  function yesNo(v, field) {
    return td(v ? "yes" : "–", v ? "yes" : "no", { "data-field": field, "data-value": String(!!v) });
  }
  const f4 = v => (Math.abs(v) >= 1000 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(3) : v.toPrecision(3));
  const money = v => v.toFixed(2);

  function render(s) {
    document.title = `tally · ${s.job.id} · ${s.phase}`;
    $("job-id").textContent = s.job.id;
    const ph = $("phase");
    ph.textContent = s.phase;
    ph.className = "badge " + s.phase;
    const finished = s.rounds.filter(r => !r.failed);
    $("round").textContent = s.job.rounds ? `round ${finished.length ? finished[finished.length - 1].round : 0} of ${s.job.rounds} finished` :
      `${finished.length} rounds finished`;
    $("source").textContent = s.source === "live" ? "live from the coordinator" : "from the coordinator's state file";
    $("updated").textContent = "updated " + new Date(s.updated).toLocaleTimeString();
    const ml = $("metrics-link");
    if (s.metrics_url) { ml.href = s.metrics_url; ml.hidden = false; } else { ml.hidden = true; }
    const j = s.job, bits = [];
    if (j.secure_aggregation) bits.push(j.secure_aggregation === "he" ?
      `secure aggregation: multiparty CKKS, committee ${j.committee_size} (threshold ${j.committee_threshold}), sums of ≥ ${j.min_group_size} clients` : "secure aggregation: none");
    if (j.valuation_mode) bits.push(`valuation: ${j.valuation_mode} mode, ${j.valuation_method}, utility ${j.utility}`);
    if (j.budget_per_round) bits.push(`budget ${j.budget_per_round} per round`);
    if (s.done) bits.push(`ended after round ${s.done.final_round}: ${s.done.reason}`);
    if (s.task) bits.push(`open task: ${s.task.kind} for round ${s.task.round}, ${s.task.submitted}/${s.task.selected} answered`);
    $("job-line").replaceChildren(...bits.map(b => { const e = document.createElement("span"); e.textContent = b; return e; }));

    tallyChart.line($("loss"), { id: "loss-chart", xLabel: "round", yLabel: "loss (cross-entropy, nats)",
      series: [{ name: "validation loss", key: "val_loss", color: "#D55E00", points: finished.map(r => ({ x: r.round, y: r.val_loss })) }],
      yFormat: v => v.toFixed(Math.abs(v) < 0.1 ? 3 : 2) });
    tallyChart.line($("accuracy"), { id: "accuracy-chart", xLabel: "round", yLabel: "accuracy (%)",
      series: [{ name: "validation accuracy", key: "val_accuracy", color: "#0072B2", points: finished.map(r => ({ x: r.round, y: r.val_accuracy })) }],
      yFormat: v => (v * 100).toFixed(1) + "%", yScale: 100, yFixed: { max: 1 } });

    // Clients.
    const cb = $("clients-table").tBodies[0];
    cb.replaceChildren(...s.clients.map(c => row([
      td(c.id), td(c.enrolled ? String(c.samples) : "not enrolled", "num"),
      c.live === undefined || c.live === null ? td("unknown", "no", { "data-field": "live" }) : yesNo(c.live, "live"),
      td(c.last_seen_seconds === undefined || c.last_seen_seconds === null ? "–" : `${c.last_seen_seconds.toFixed(0)} s ago`, "num"),
      yesNo(c.selected, "selected"), yesNo(c.committee, "committee"), c.dropped ? td("dropped", "bad", { "data-field": "dropped", "data-value": "true" }) : yesNo(false, "dropped"),
      td(String(c.rounds_contributed), "num"),
    ], { "data-client": c.id })));
    const n = p => s.clients.filter(p).length;
    const sum = [`${n(c => c.enrolled)} of ${s.clients.length} enrolled`];
    if (s.clients.some(c => c.live !== undefined && c.live !== null)) sum.push(`${n(c => c.live)} live`);
    if (s.task) sum.push(`${s.task.selected} selected`);
    sum.push(`${n(c => c.dropped)} dropped last round`);
    if (s.keys.committee.length) sum.push(`committee of ${s.keys.committee.length}`);
    else if (s.keys.epochs) sum.push("committee members unknown without the job file");
    $("clients-summary").textContent = sum.join(" · ");

    // Contributions.
    const tb = $("contrib-table").tBodies[0];
    tb.replaceChildren(...s.contributions.map(c => row([
      td(String(c.rank), "num", { "data-field": "rank", "data-value": c.rank }), td(c.client, "", { "data-field": "client" }),
      td(String(c.rounds), "num", { "data-field": "rounds", "data-value": c.rounds }),
      td(`${f4(c.value)} ± ${f4(c.stderr)}`, "num", { "data-field": "value", "data-value": c.value, "data-stderr": c.stderr }),
      td(money(c.payout), "num", { "data-field": "payout", "data-value": c.payout }),
      td(money(c.quota), "num", { "data-field": "quota", "data-value": c.quota }),
    ], { "data-client": c.client })));
    const paid = s.contributions.reduce((a, c) => a + c.payout, 0);
    $("contrib-summary").textContent = `from the ${s.contributions_from} · ${money(paid)} paid in all`;
    // Values per round: the ten best-ranked clients, so the chart stays
    // readable with a thousand.
    const top = s.contributions.slice(0, 10).map(c => c.client);
    $("values-note").textContent = s.contributions.length > top.length ? `(top ${top.length} of ${s.contributions.length} by rank)` : "";
    tallyChart.line($("values"), { id: "values-chart", xLabel: "round", yLabel: "value (utility units)", width: 560,
      series: top.map(id => ({ name: id, key: id, points: finished.filter(r => r.values && id in r.values).map(r => ({ x: r.round, y: r.values[id] })) })),
      yFormat: v => f4(v), empty: "no valued round yet" });

    // Decryption audit, newest round first: the decryptions of one round
    // with the same purpose and number of contributors (one influence
    // scalar per client, say) are one row, with how many there were and
    // how many of them each committee member's share went into.
    const groups = [];
    for (const d of s.decryptions) {
      const k = `${d.round}/${d.attempt}/${d.purpose}/${d.contributors}`;
      let g = groups.find(g => g.k === k);
      if (!g) groups.push(g = { k, d, n: 0, by: {} });
      g.n++;
      for (const p of d.participants) g.by[p] = (g.by[p] || 0) + 1;
    }
    groups.sort((a, b) => b.d.round - a.d.round || b.d.attempt - a.d.attempt);
    const shown = [...new Set(groups.map(g => g.d.round))].slice(0, 8);
    const rowsShown = groups.filter(g => shown.includes(g.d.round));
    $("decrypt-note").textContent = groups.length > rowsShown.length ? ` · latest ${shown.length} rounds shown; /api/state has them all` : "";
    $("decrypt-table").tBodies[0].replaceChildren(...(rowsShown.length ? rowsShown.map(({ d, n, by }) => row([
      td(String(d.round), "num"), td(d.purpose, "", { "data-field": "purpose" }), td(String(n), "num", { "data-field": "count", "data-value": n }),
      td(String(d.contributors), "num", { "data-field": "contributors", "data-value": d.contributors }),
      td(Object.keys(by).length ? Object.keys(by).sort().map(p => n > 1 ? `${p} ×${by[p]}` : p).join(", ") : "none: seen in the clear (no secure aggregation)", "wrap"),
    ], { "data-round": d.round })) : [row([td("no decryption recorded", "no", { colspan: 5 })])]));

    // Key generations.
    const k = s.keys;
    $("keys-summary").textContent = k.epochs ? `${k.epochs} · latest committee ${k.committee.join(", ")}` : "none";
    $("keys-table").tBodies[0].replaceChildren(...(k.generations.length ? k.generations.map(g => row([
      td(String(g.epoch), "num"), td(g.round ? String(g.round) : "–", "num"), td(g.committee.length ? g.committee.join(", ") : "members unknown without the job file", "wrap"), td(g.key_id || "–"),
    ], { "data-epoch": g.epoch })) : [row([td("no key generation (no secure aggregation, or not started)", "no", { colspan: 4 })])]));
    $("keys-note").textContent = k.note || "";

    // Round attempts, newest first.
    $("rounds-table").tBodies[0].replaceChildren(...s.rounds.slice().reverse().slice(0, 50).map(r => row([
      td(String(r.round), "num"), td(String(r.attempt), "num"), td(r.failed ? "failed: " + r.reason : "finished", r.failed ? "wrap bad" : "yes"),
      td(String(r.selected), "num"), td(String(r.contributors), "num"), td((r.dropped || []).join(", ") || "–", "wrap"),
    ], { class: r.failed ? "fail" : "" })));
  }

  async function poll() {
    try {
      const resp = await fetch("/api/state", { cache: "no-store", credentials: "same-origin" });
      if (!resp.ok) throw new Error(`${resp.status} ${(await resp.text()).trim()}`);
      const s = await resp.json();
      render(s);
      lastOK = new Date();
      $("error").hidden = true;
      document.body.dataset.phase = s.phase;
      document.body.dataset.rounds = s.rounds.filter(r => !r.failed).length;
    } catch (e) {
      const err = $("error");
      err.hidden = false;
      err.textContent = lastOK ? `The dashboard server stopped answering (${e.message}); shown is the state of ${lastOK.toLocaleTimeString()}. ` +
        "After a job ends, `tally dashboard --state FILE` serves it from the state file." : `No state yet: ${e.message}`;
    }
    setTimeout(poll, POLL_MS);
  }
  poll();
})();
