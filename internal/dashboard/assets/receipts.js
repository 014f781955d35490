// tally data holder's view: renders the receipts the Go side verified
// (inline in the page), and when served over HTTP, refreshes them.
"use strict";

(function () {
  const $ = id => document.getElementById(id);
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
  const f4 = v => (Math.abs(v) >= 1000 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(3) : v.toPrecision(3));
  const money = v => v.toFixed(2);

  function render(d) {
    $("client").textContent = d.client;
    $("file").textContent = d.file;
    $("checked").textContent = "checked " + new Date(d.checked).toLocaleString();
    $("pubkey").textContent = d.public_key;
    $("jobs").textContent = d.jobs.length ? "job " + d.jobs.join(", ") : "";
    const v = $("verdict");
    v.textContent = d.failing ? `${d.failing} of ${d.rows.length} receipts FAIL verification` : `all ${d.rows.length} receipts verify`;
    v.className = "badge " + (d.failing ? "failing" : "verified");
    document.body.dataset.failing = d.failing;
    document.body.dataset.verified = d.verified;

    const box = (label, value, cls) => {
      const e = document.createElement("div");
      const b = document.createElement("b");
      b.textContent = value;
      if (cls) b.className = cls;
      e.append(b, label);
      return e;
    };
    $("summary").replaceChildren(box("receipts", String(d.rows.length)), box("verified", String(d.verified), "verified"),
      box("failing", String(d.failing), d.failing ? "failing" : ""), box("total value", f4(d.value)),
      box("total payout", money(d.payout)), box("quota credits", money(d.quota)));

    const ok = d.rows.filter(r => r.verified);
    const jobs = d.jobs.length ? d.jobs : [""];
    const series = field => jobs.map(j => ({ name: jobs.length > 1 ? j : field, key: jobs.length > 1 ? `${field}/${j}` : field,
      points: ok.filter(r => r.job === j || jobs.length === 1).map(r => ({ x: r.round, y: r[field] })) }));
    tallyChart.line($("values"), { id: "values-chart", xLabel: "round", yLabel: "value (utility units)", series: series("value"), yFormat: f4, empty: "no verified receipt" });
    tallyChart.line($("payouts"), { id: "payouts-chart", xLabel: "round", yLabel: "payout (budget units)", series: series("payout"), yFormat: money, yFixed: { min: 0 }, empty: "no verified receipt" });

    $("receipts-table").tBodies[0].replaceChildren(...d.rows.map(r => row([
      td(String(r.line), "num"), td(r.seq ? String(r.seq) : "–", "num"), td(r.job || "–"), td(r.seq ? String(r.round) : "–", "num"),
      td(r.method ? `${r.method} (${r.mode})` : "–"),
      td(r.seq ? `${f4(r.value)} ± ${f4(r.stderr)}` : "–", "num"), td(r.seq ? money(r.payout) : "–", "num"), td(r.seq ? money(r.quota) : "–", "num"),
      // Hashes are cut to their first 12 digits, enough to tell them apart.
      td(r.verified ? "verified" : "FAILS: " + r.problem.replace(/[0-9a-f]{24,}/g, h => h.slice(0, 12) + "…"), r.verified ? "verified" : "failing wrap", { "data-field": "verification" }),
    ], { "data-line": r.line, "data-seq": r.seq, "data-round": r.round, "data-verified": String(r.verified), class: r.verified ? "" : "fail" })));

    const rows = [];
    for (const r of d.rows) {
      const groups = [];
      for (const x of r.decrypted) {
        const g = groups.find(g => g.purpose === x.purpose && g.contributors === x.contributors);
        if (g) g.n++; else groups.push({ purpose: x.purpose, contributors: x.contributors, n: 1 });
      }
      for (const g of groups) rows.push(row([td(String(r.round), "num"), td(g.purpose), td(String(g.n), "num"),
        td(String(g.contributors), "num"), td(r.verified ? `seq ${r.seq}, verified` : `line ${r.line}, FAILS`, r.verified ? "verified" : "failing")],
        { "data-round": r.round, "data-verified": String(r.verified) }));
    }
    $("decrypt-table").tBodies[0].replaceChildren(...(rows.length ? rows : [row([td("no decryption listed", "no", { colspan: 5 })])]));
  }

  render(JSON.parse($("receipts-data").textContent));
  if (location.protocol === "http:" || location.protocol === "https:") {
    const refresh = async () => {
      try {
        const resp = await fetch("/api/receipts", { cache: "no-store", credentials: "same-origin" });
        if (resp.ok) render(await resp.json());
      } catch (e) { /* keep what is shown */ }
      setTimeout(refresh, 5000);
    };
    setTimeout(refresh, 5000);
  }
})();
