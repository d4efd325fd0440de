// Building the DOM without markup strings: every value from the API lands as text, never as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

/** An HTML element: h("a", {href: "#/x", class: "c"}, "text", child, [more]). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element, with the same arguments as h(). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

export function ago(iso) {
  if (!iso) return "—";
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (!Number.isFinite(seconds)) return String(iso);
  const abs = Math.abs(seconds);
  const text = abs < 90 ? `${abs} s` : abs < 5400 ? `${Math.round(abs / 60)} min` : abs < 172800
    ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} d`;
  return seconds >= 0 ? `${text} ago` : `in ${text}`;
}

export function fmtNum(value, digits = 3) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString();
  return Number(value.toPrecision(digits)).toString();
}

export function badge(text, kind = text) {
  return h("span", {class: `badge badge-${String(kind).replace(/[^a-z0-9_-]/gi, "")}`}, text);
}

/** A table: columns are [{title, cell(row) -> node or text, class}]. */
export function table(columns, rows, {empty = "Nothing to show.", caption, rowAttrs} = {}) {
  if (!rows.length) return h("p", {class: "empty"}, empty);
  return h("table", {class: "grid"},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {scope: "col", class: c.class}, c.title)))),
    h("tbody", {}, rows.map((row) => h("tr", rowAttrs ? rowAttrs(row) : {},
      columns.map((c) => h("td", {class: c.class}, c.cell(row)))))));
}

export function section(title, ...children) {
  return h("section", {class: "card"}, h("h2", {}, title), ...children);
}

export function select(name, options, value, onchange) {
  return h("select", {name, "aria-label": name, onchange: (e) => onchange(e.target.value)},
    options.map(([val, label]) => h("option", {value: val, selected: val === value}, label)));
}

export function modelRef(ref) {
  if (!ref) return "—";
  return `${ref.name}:${ref.version}${ref.variant ? ` (${ref.variant})` : ""}`;
}

/** Append children (text, nodes, arrays; null and false are skipped) to el. */
export function add(el, ...children) {
  append(el, children);
  return el;
}

/** Replace el's children with these. */
export function fill(el, ...children) {
  return add(clear(el), ...children);
}
