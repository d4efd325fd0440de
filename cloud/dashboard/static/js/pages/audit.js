// The audit log: who changed what, when, and under which request id. Hubs without the audit API
// answer 404; the page says so instead of failing.

import {ApiError, api} from "../api.js";
import {add, fill, fmtTime, h, section, table} from "../dom.js";

const TIME_KEYS = ["at", "ts", "created_at", "time"];
const PREFERRED = ["actor", "actor_role", "via", "action", "operation", "object_type", "object_id", "request_id"];

function pick(row, keys) {
  for (const key of keys) if (row[key] !== undefined && row[key] !== null) return row[key];
  return null;
}

function text(value) {
  if (value === null || value === undefined || value === "") return "—";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

export async function renderAudit(view, {query}) {
  add(view, h("h1", {}, "Audit log"));
  let body;
  try {
    body = await api("/audit", {params: {limit: 200}});
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 405)) {
      add(view, section("Not available", h("p", {id: "audit-unavailable"},
        "This hub does not serve an audit log (GET /api/v1/audit answered 404).")));
      return;
    }
    throw error;
  }
  const rows = Array.isArray(body) ? body : body.data || [];
  const columns = PREFERRED.filter((key) => rows.some((r) => r[key] !== undefined && typeof r[key] !== "object"));
  const filter = h("input", {type: "search", name: "q", placeholder: "filter: actor, action, object…",
    value: query.get("q") || "", "aria-label": "filter the audit log"});
  const holder = h("div", {id: "audit-table"});

  function paint() {
    const needle = filter.value.trim().toLowerCase();
    const shown = needle ? rows.filter((r) => JSON.stringify(r).toLowerCase().includes(needle)) : rows;
    fill(holder, table([
      {title: "At", cell: (r) => fmtTime(pick(r, TIME_KEYS))},
      ...columns.map((key) => ({title: key.replace(/_/g, " "), cell: (r) => text(r[key])})),
      {title: "Change", cell: (r) => (r.before !== undefined || r.after !== undefined
        ? h("details", {}, h("summary", {}, "before / after"),
          h("pre", {}, `before: ${JSON.stringify(r.before, null, 1)}\nafter: ${JSON.stringify(r.after, null, 1)}`))
        : "—")},
    ], shown, {empty: needle ? "No entry matches." : "No entries yet.",
      rowAttrs: (r) => ({"data-audit-action": text(r.action)})}));
  }

  filter.addEventListener("input", paint);
  add(view, h("div", {class: "filters"}, filter), holder);
  paint();
}
