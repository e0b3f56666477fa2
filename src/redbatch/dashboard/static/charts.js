// Charts as plain SVG: lines over time, and bars. No library: a few dozen points each.
"use strict";

const RBCharts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PAD = { left: 42, right: 10, top: 8, bottom: 20 };

  function node(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function frame(svg) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const w = svg.clientWidth || 400, h = svg.clientHeight || 170;
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    return { w, h, iw: w - PAD.left - PAD.right, ih: h - PAD.top - PAD.bottom };
  }

  // A "nice" upper bound and tick step for values up to max.
  function scale(max) {
    if (!(max > 0)) return { top: 1, step: 0.5 };
    const raw = max / 4, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    return { top: Math.ceil(max / step) * step, step };
  }

  function number(v) {
    if (v >= 1000) return `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}k`;
    return v >= 10 || v === 0 ? String(Math.round(v)) : v.toFixed(1);
  }

  function clock(ms) {
    const d = new Date(ms);
    return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  }

  function tick(svg, f, y, label) {
    svg.appendChild(node("line", { x1: PAD.left, x2: f.w - PAD.right, y1: y, y2: y, class: "grid" }));
    svg.appendChild(node("text", { x: PAD.left - 4, y: y + 3, "text-anchor": "end" }, label));
  }

  function yAxis(svg, f, s) {
    for (let v = 0; v <= s.top + 1e-9; v += s.step) tick(svg, f, PAD.top + f.ih - (v / s.top) * f.ih, number(v));
  }

  // A y mapping: linear from 0, or (log) by powers of ten, for latencies that span decades.
  function yScale(svg, f, values, log) {
    if (!log) {
      const s = scale(Math.max(0, ...values));
      yAxis(svg, f, s);
      return (v) => PAD.top + f.ih - (v / s.top) * f.ih;
    }
    const known = values.filter((v) => v > 0);
    const lo = Math.floor(Math.log10(Math.min(...known, 1))), hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...known, 1))));
    const y = (v) => PAD.top + f.ih - ((Math.log10(Math.max(v, Math.pow(10, lo))) - lo) / (hi - lo)) * f.ih;
    for (let e = lo; e <= hi; e++) tick(svg, f, y(Math.pow(10, e)), number(Math.pow(10, e)));
    return y;
  }

  // series: [{name, points: [[t_ms, value|null], ...]}]; gaps where a value is null.
  function lines(svg, series, log) {
    const f = frame(svg);
    const all = series.flatMap((s) => s.points);
    if (!all.length) return;
    const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
    const y = yScale(svg, f, all.map((p) => p[1] || 0), log);
    const x = (t) => PAD.left + (t1 > t0 ? ((t - t0) / (t1 - t0)) * f.iw : f.iw);
    for (const t of [t0, (t0 + t1) / 2, t1]) {
      svg.appendChild(node("text", { x: x(t), y: f.h - 5, "text-anchor": "middle" }, clock(t)));
    }
    series.forEach((one, i) => {
      let run = [];
      const flush = () => {
        if (run.length === 1) svg.appendChild(node("circle", { cx: run[0][0], cy: run[0][1], r: 1.8, class: `s${i}` }));
        if (run.length > 1) svg.appendChild(node("polyline", { points: run.map((p) => p.join(",")).join(" "), class: `line s${i}` }));
        run = [];
      };
      for (const [t, v] of one.points) {
        if (v === null || v === undefined) flush();
        else run.push([x(t).toFixed(1), y(v).toFixed(1)]);
      }
      flush();
      const lx = PAD.left + 6 + i * 78;
      svg.appendChild(node("rect", { x: lx, y: PAD.top + 2, width: 10, height: 3, class: `s${i}` }));
      svg.appendChild(node("text", { x: lx + 13, y: PAD.top + 7 }, one.name));
    });
  }

  // bars: [{label, value}]
  function bars(svg, data, mini) {
    const f = frame(svg);
    if (!data.length) {
      if (!mini) svg.appendChild(node("text", { x: f.w / 2, y: f.h / 2, "text-anchor": "middle" }, "no batches in the last minute"));
      return;
    }
    const pad = mini ? { left: 0, top: 0, bottom: 0 } : PAD;
    const iw = mini ? f.w : f.iw, ih = mini ? f.h : f.ih;
    const s = scale(Math.max(...data.map((d) => d.value)));
    if (!mini) yAxis(svg, f, s);
    const bw = iw / data.length;
    data.forEach((d, i) => {
      const hgt = (d.value / s.top) * ih;
      const bar = node("rect", { x: pad.left + i * bw + 1, y: pad.top + ih - hgt, width: Math.max(1, bw - 2), height: hgt, class: "bar" });
      bar.appendChild(node("title", {}, `${d.label}: ${d.value}`));
      svg.appendChild(bar);
      if (!mini) svg.appendChild(node("text", { x: pad.left + (i + 0.5) * bw, y: f.h - 5, "text-anchor": "middle" }, d.label));
    });
  }

  return { lines, bars };
})();
