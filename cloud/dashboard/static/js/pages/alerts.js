// Alerts raised by the alert rules, and one alert's history and notifications.

import {api} from "../api.js";
import {add, ago, badge, fill, fmtNum, fmtTime, h, section, select, table} from "../dom.js";

const STATES = ["firing", "pending", "resolved", "inactive"];
const REFRESH_MS = 10000;

export async function renderAlerts(view, {query}) {
  let state = query.get("state") || "";
  const holder = h("div", {id: "alert-table"});

  async function load() {
    const body = await api("/alerts", {params: {state, limit: 500}});
    fill(holder, table([
      {title: "#", class: "num", cell: (a) => h("a", {href: `#/alerts/${a.id}`}, String(a.id))},
      {title: "Rule", cell: (a) => a.rule},
      {title: "Severity", cell: (a) => badge(a.severity)},
      {title: "State", cell: (a) => badge(a.state)},
      {title: "Scope", cell: (a) => a.cohort || (a.cohort_id === 0 ? "whole fleet" : `cohort #${a.cohort_id}`)},
      {title: "Model", cell: (a) => `${a.model_name}:${a.model_version}`},
      {title: "Value", class: "num", cell: (a) => fmtNum(a.value)},
      {title: "Feature", cell: (a) => a.feature || "—"},
      {title: "Since", cell: (a) => h("span", {title: a.since}, ago(a.since))},
    ], body.data, {empty: "No alerts.", rowAttrs: (a) => ({"data-alert": a.id, "data-state": a.state})}));
  }

  add(view, h("h1", {}, "Alerts"),
    h("div", {class: "filters"}, select("state", [["", "any state"], ...STATES.map((st) => [st, st])], state,
      async (value) => {
        state = value;
        history.replaceState(null, "", `#/alerts${value ? `?state=${value}` : ""}`);
        await load();
      })),
    holder);
  await load();
  const timer = setInterval(() => load().catch(() => {}), REFRESH_MS);
  return () => clearInterval(timer);
}

export async function renderAlert(view, {match}) {
  const a = await api(`/alerts/${match[0]}`);
  add(view, h("p", {}, h("a", {href: "#/alerts"}, "← Alerts")),
    h("h1", {}, `Alert ${a.id}: ${a.rule} `, badge(a.state)),
    h("div", {class: "card"}, h("dl", {class: "facts"},
      h("dt", {}, "metric"), h("dd", {}, `${a.metric}${a.feature ? ` (${a.feature})` : ""}`),
      h("dt", {}, "scope"), h("dd", {}, a.cohort || "whole fleet"),
      h("dt", {}, "model"), h("dd", {}, `${a.model_name}:${a.model_version}`),
      h("dt", {}, "value"), h("dd", {}, fmtNum(a.value)),
      h("dt", {}, "fired"), h("dd", {}, fmtTime(a.fired_at)),
      h("dt", {}, "resolved"), h("dd", {}, fmtTime(a.resolved_at)))),
    section("History", table([
      {title: "At", cell: (t) => fmtTime(t.at)},
      {title: "Change", cell: (t) => `${t.from} → ${t.to}`},
      {title: "Event", cell: (t) => t.event},
      {title: "Value", class: "num", cell: (t) => fmtNum(t.value)},
      {title: "Detail", cell: (t) => t.detail},
    ], a.history)),
    section("Notifications", table([
      {title: "#", class: "num", cell: (n) => n.id},
      {title: "State", cell: (n) => n.state},
      {title: "Created", cell: (n) => fmtTime(n.created_at)},
      {title: "Deliveries", cell: (n) => n.deliveries.map((d) => `${d.receiver}: ${d.state}`).join(", ") || "—"},
    ], a.notifications, {empty: "No receiver was notified."})));
}
