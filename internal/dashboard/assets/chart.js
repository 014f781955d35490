// tally dashboard charts: line charts drawn as inline SVG, by hand, with
// axes, ticks, units and a legend. No library: the pages must work from
// the binary alone, offline.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  // Colour-blind-safe palette (Okabe & Ito, 2008), its yellow replaced by
  // a brown that reads on white, then a grey and a violet.
  const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#8C6D31", "#888888", "#5a3e8a"];

  function el(name, attrs, text) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // niceStep returns a round step (1, 2 or 5 times a power of ten) that
  // cuts span into about n intervals.
  function niceStep(span, n) {
    const raw = span / Math.max(1, n);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  }

  function ticks(lo, hi, n, integer) {
    let step = niceStep(hi - lo, n);
    if (integer) step = Math.max(1, Math.round(step));
    const out = [];
    for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  // domain pads [lo, hi] so that a flat or single-valued series still has
  // an axis to stand on.
  function domain(values, fixed) {
    let lo = Math.min(...values), hi = Math.max(...values);
    if (fixed && fixed.min !== undefined) lo = Math.min(lo, fixed.min);
    if (fixed && fixed.max !== undefined) hi = Math.max(hi, fixed.max);
    if (!isFinite(lo) || !isFinite(hi)) return [0, 1];
    if (hi - lo < 1e-12) {
      const pad = Math.abs(hi) > 1e-12 ? Math.abs(hi) * 0.1 : 1;
      return [lo - pad, hi + pad];
    }
    const pad = (hi - lo) * 0.06;
    return [fixed && fixed.min !== undefined && lo === fixed.min ? lo : lo - pad, fixed && fixed.max !== undefined && hi === fixed.max ? hi : hi + pad];
  }

  // line draws a chart into container (replacing what it held).
  // opts: {id, xLabel, yLabel, series: [{name, key, color?, points: [{x, y}]}],
  //        yFormat(v), yFixed: {min?, max?}, width, height, empty}
  function line(container, opts) {
    const W = opts.width || 560;
    const series = opts.series.filter(s => s.points.length > 0);
    // The legend runs along the top, in as many rows as it needs; the
    // plot area keeps its height below it.
    const m = { left: 66, right: 18, top: 34, bottom: 46 };
    const legend = [];
    let lx = m.left, ly = 14;
    for (const s of series) {
      const w = 34 + 7 * s.name.length;
      if (lx + w > W - m.right && lx > m.left) { lx = m.left; ly += 18; }
      legend.push({ x: lx, y: ly });
      lx += w;
    }
    m.top += ly - 14;
    const H = (opts.height || 300) + ly - 14;
    const pw = W - m.left - m.right, ph = H - m.top - m.bottom;
    const fmt = opts.yFormat || (v => String(v));
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", class: "chart", id: opts.id, "aria-label": opts.title || opts.yLabel });
    const xs = series.flatMap(s => s.points.map(p => p.x));
    const ys = series.flatMap(s => s.points.map(p => p.y));
    let [x0, x1] = xs.length ? [Math.min(...xs), Math.max(...xs)] : [1, 2];
    if (x1 - x0 < 1) { x0 -= 0.5; x1 += 0.5; }
    const [y0, y1] = ys.length ? domain(ys, opts.yFixed) : [0, 1];
    const X = x => m.left + (x - x0) / (x1 - x0) * pw;
    const Y = y => m.top + ph - (y - y0) / (y1 - y0) * ph;

    const g = el("g", { class: "axes" });
    // Tick labels carry as many decimals as the step needs, in the axis'
    // unit (yScale: 100 for a percentage of a fraction).
    const scale = opts.yScale || 1;
    const step = niceStep((y1 - y0) * scale, 5);
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    for (const t of ticks(y0, y1, 5, false)) {
      g.appendChild(el("line", { x1: m.left, x2: m.left + pw, y1: Y(t), y2: Y(t), class: "grid" }));
      g.appendChild(el("text", { x: m.left - 6, y: Y(t) + 4, "text-anchor": "end", class: "tick" }, (t * scale).toFixed(decimals)));
    }
    for (const t of ticks(x0, x1, Math.min(10, Math.max(1, Math.round(x1 - x0))), true)) {
      if (t < x0 - 1e-9 || t > x1 + 1e-9) continue;
      g.appendChild(el("line", { x1: X(t), x2: X(t), y1: m.top + ph, y2: m.top + ph + 5, class: "tickmark" }));
      g.appendChild(el("text", { x: X(t), y: m.top + ph + 18, "text-anchor": "middle", class: "tick" }, String(t)));
    }
    g.appendChild(el("line", { x1: m.left, x2: m.left + pw, y1: m.top + ph, y2: m.top + ph, class: "axis" }));
    g.appendChild(el("line", { x1: m.left, x2: m.left, y1: m.top, y2: m.top + ph, class: "axis" }));
    g.appendChild(el("text", { x: m.left + pw / 2, y: H - 8, "text-anchor": "middle", class: "label" }, opts.xLabel));
    g.appendChild(el("text", { x: 14, y: m.top + ph / 2, "text-anchor": "middle", class: "label", transform: `rotate(-90 14 ${m.top + ph / 2})` }, opts.yLabel));
    svg.appendChild(g);

    if (!series.length) {
      svg.appendChild(el("text", { x: m.left + pw / 2, y: m.top + ph / 2, "text-anchor": "middle", class: "empty" }, opts.empty || "no finished round yet"));
    }
    series.forEach((s, i) => {
      const c = s.color || PALETTE[i % PALETTE.length];
      const { x, y } = legend[i];
      const lg = el("g", { class: "legend", "data-series": s.key || s.name });
      lg.appendChild(el("line", { x1: x, x2: x + 18, y1: y, y2: y, stroke: c, "stroke-width": 3 }));
      lg.appendChild(el("circle", { cx: x + 9, cy: y, r: 3.5, fill: c }));
      lg.appendChild(el("text", { x: x + 24, y: y + 4, class: "legend-label" }, s.name));
      svg.appendChild(lg);
    });
    series.forEach((s, i) => {
      const c = s.color || PALETTE[i % PALETTE.length];
      const pts = s.points.slice().sort((a, b) => a.x - b.x);
      const sg = el("g", { class: "series", "data-series": s.key || s.name });
      sg.appendChild(el("polyline", { points: pts.map(p => `${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(" "), fill: "none", stroke: c, "stroke-width": 2 }));
      for (const p of pts) {
        const dot = el("circle", { cx: X(p.x).toFixed(1), cy: Y(p.y).toFixed(1), r: pts.length > 60 ? 2 : 3.5, fill: c, class: "point",
          "data-series": s.key || s.name, "data-round": p.x, "data-value": p.y });
        dot.appendChild(el("title", {}, `${s.name}, round ${p.x}: ${fmt(p.y)}`));
        sg.appendChild(dot);
      }
      svg.appendChild(sg);
    });
    container.replaceChildren(svg);
    return svg;
  }

  window.tallyChart = { line, PALETTE };
})();
