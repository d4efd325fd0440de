// Small SVG charts drawn here: lines over time with an optional threshold, and horizontal bars.

import {h, s, fmtNum} from "./dom.js";

const COLORS = ["#2f6fde", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c", "#5c940d"];

export function color(index) {
  return COLORS[index % COLORS.length];
}

function niceTicks(min, max, count = 4) {
  if (min === max) return [min];
  const step0 = (max - min) / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= step0) || step0;
  const ticks = [];
  for (let t = Math.ceil(min / step) * step; t <= max + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function timeLabel(ms, spanMs) {
  const d = new Date(ms);
  if (spanMs > 2 * 86400000) return d.toLocaleDateString(undefined, {month: "short", day: "numeric"});
  if (spanMs < 600000) return d.toLocaleTimeString(undefined, {hour: "2-digit", minute: "2-digit", second: "2-digit"});
  return d.toLocaleTimeString(undefined, {hour: "2-digit", minute: "2-digit"});
}

/**
 * A line chart of series over time.
 * series: [{label, points: [{t: Date|string, v: number}]}]; threshold: a number drawn dashed, or null.
 */
export function lineChart({title, series, threshold = null, unit = "", width = 560, height = 200}) {
  const pad = {l: 48, r: 12, t: 12, b: 26};
  const all = series.flatMap((sr) => sr.points.map((p) => ({t: new Date(p.t).getTime(), v: p.v})))
    .filter((p) => Number.isFinite(p.t) && Number.isFinite(p.v));
  const figure = h("figure", {class: "chart", "data-chart": title});
  figure.append(h("figcaption", {}, title));
  if (!all.length) {
    figure.append(h("p", {class: "empty"}, "No data in this period."));
    return figure;
  }
  let t0 = Math.min(...all.map((p) => p.t));
  let t1 = Math.max(...all.map((p) => p.t));
  if (t0 === t1) { t0 -= 60000; t1 += 60000; }
  const values = all.map((p) => p.v).concat(threshold === null ? [] : [threshold]);
  let v0 = Math.min(0, ...values);
  let v1 = Math.max(...values);
  if (v0 === v1) v1 = v0 + 1;
  v1 += (v1 - v0) * 0.08;
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (width - pad.l - pad.r);
  const y = (v) => height - pad.b - ((v - v0) / (v1 - v0)) * (height - pad.t - pad.b);

  const svg = s("svg", {viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img",
    "aria-label": title});
  for (const tick of niceTicks(v0, v1)) {
    svg.append(s("line", {x1: pad.l, x2: width - pad.r, y1: y(tick), y2: y(tick), class: "grid-line"}));
    svg.append(s("text", {x: pad.l - 6, y: y(tick) + 4, class: "axis", "text-anchor": "end"}, fmtNum(tick)));
  }
  for (const [tick, anchor] of [[t0, "start"], [(t0 + t1) / 2, "middle"], [t1, "end"]]) {
    svg.append(s("text", {x: x(tick), y: height - 8, class: "axis", "text-anchor": anchor},
      timeLabel(tick, t1 - t0)));
  }
  if (threshold !== null) {
    svg.append(s("line", {x1: pad.l, x2: width - pad.r, y1: y(threshold), y2: y(threshold),
      class: "threshold"}, s("title", {}, `threshold ${fmtNum(threshold)}${unit}`)));
  }
  series.forEach((sr, i) => {
    const pts = sr.points.map((p) => ({t: new Date(p.t).getTime(), v: p.v, p}))
      .filter((p) => Number.isFinite(p.t) && Number.isFinite(p.v)).sort((a, b) => a.t - b.t);
    if (!pts.length) return;
    const d = pts.map((p, j) => `${j ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
    svg.append(s("path", {d, class: "series", stroke: color(i), "data-series": sr.label}));
    for (const p of pts) {
      const over = threshold !== null && p.v > threshold;
      svg.append(s("circle", {cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: over ? 3.5 : 2.5,
        fill: over ? "#c92a2a" : color(i)},
        s("title", {}, `${sr.label}: ${fmtNum(p.v)}${unit} at ${new Date(p.t).toLocaleString()}`)));
    }
  });
  figure.append(svg);
  if (series.length > 1 || threshold !== null) {
    figure.append(h("ul", {class: "legend"},
      series.map((sr, i) => h("li", {}, h("span", {class: "swatch", "data-color": i % COLORS.length}), sr.label)),
      threshold !== null ? h("li", {}, h("span", {class: "swatch swatch-threshold"}), `threshold ${fmtNum(threshold)}`)
        : null));
  }
  return figure;
}

/** Horizontal bars: rows [[label, count, href?]], each as a share of the largest. */
export function bars(rows, {name = "counts"} = {}) {
  const max = Math.max(1, ...rows.map(([, n]) => n));
  return h("ul", {class: "bars", "data-bars": name}, rows.map(([label, n, href], i) => h("li", {},
    href ? h("a", {href, class: "bar-label"}, label) : h("span", {class: "bar-label"}, label),
    s("svg", {class: "bar", viewBox: "0 0 100 10", preserveAspectRatio: "none", "aria-hidden": "true"},
      s("rect", {x: 0, y: 0, height: 10, width: Math.max(0.5, (100 * n) / max), fill: color(i)})),
    h("span", {class: "bar-count", "data-count": n}, n.toLocaleString()))));
}

/** One stacked bar of a stage's devices per state. */
export function stackedBar(parts, total) {
  const svg = s("svg", {class: "stack", viewBox: "0 0 100 8", preserveAspectRatio: "none", role: "img",
    "aria-label": parts.map(([k, n]) => `${k} ${n}`).join(", ")});
  let at = 0;
  for (const [key, n, fill] of parts) {
    if (!n || !total) continue;
    const w = (100 * n) / total;
    svg.append(s("rect", {x: at, y: 0, width: w, height: 8, fill}, s("title", {}, `${key}: ${n}`)));
    at += w;
  }
  return svg;
}
