// Fleet overview: devices by state, health, version and cohort (counted by the hub), and a table of
// devices filtered by the hub, a page at a time, so that it stays quick with thousands of devices.

import {api} from "../api.js";
import {bars} from "../charts.js";
import {add, ago, badge, fill, h, modelRef, section, select, table} from "../dom.js";

const PAGE = 100;
const FILTERS = ["state", "health", "version", "cohort", "label"];

function stat(label, value, name) {
  return h("div", {class: "stat", "data-stat": name}, h("span", {class: "stat-value"}, value.toLocaleString()),
    h("span", {class: "stat-label"}, label));
}

function versionKey(v) {
  return v.name === null ? "" : `${v.name}:${v.version}`;
}

function overviewHash(filters) {
  const q = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
  return `#/overview${q.toString() ? `?${q}` : ""}`;
}

function deviceTable(rows) {
  return table([
    {title: "Device", cell: (d) => h("a", {href: `#/devices/${encodeURIComponent(d.id)}`}, d.id)},
    {title: "State", cell: (d) => badge(d.state)},
    {title: "Health", cell: (d) => d.health || "—"},
    {title: "Model", cell: (d) => modelRef(d.active_model)},
    {title: "In sync", cell: (d) => (d.in_sync ? "yes" : badge("no", "warn"))},
    {title: "Labels", cell: (d) => Object.entries(d.labels).map(([k, v]) => h("code", {class: "label"}, `${k}=${v}`))},
    {title: "Last seen", cell: (d) => h("span", {title: d.last_seen}, ago(d.last_seen))},
  ], rows, {empty: "No device matches these filters.", rowAttrs: (d) => ({"data-device": d.id})});
}

export async function renderOverview(view, {query}) {
  const [summary, rollouts, alerts] = await Promise.all([
    api("/fleet/summary"),
    api("/rollouts", {params: {limit: 50}}),
    api("/alerts", {params: {state: "firing", limit: 100}}),
  ]);
  const active = rollouts.data.filter((r) => !["completed", "rolled_back", "superseded"].includes(r.state));
  const filters = Object.fromEntries(FILTERS.map((key) => [key, query.get(key) || ""]));

  const holder = h("div", {id: "device-table"});
  const note = h("p", {class: "muted", id: "device-count"});
  const more = h("button", {type: "button", id: "more-devices", hidden: true}, `Next ${PAGE}`);
  let rows = [];
  let cursor = null;

  function params() {
    const [model, version] = filters.version ? filters.version.split(":") : [null, null];
    return {state: filters.state, health: filters.health, cohort: filters.cohort, label: filters.label,
      model, version, limit: PAGE};
  }

  let loadSeq = 0;  // a newer filter wins over a slower answer to an older one

  async function load(reset) {
    const seq = reset ? ++loadSeq : loadSeq;
    let page;
    try {
      page = await api("/devices", {params: {...params(), cursor: reset ? null : cursor}});
    } catch (error) {
      if (seq !== loadSeq) return;
      if (error.status !== 422 && error.status !== 404) throw error;
      fill(holder, h("p", {class: "form-error", id: "filter-error"}, error.message));
      note.textContent = "";
      more.hidden = true;
      return;
    }
    if (seq !== loadSeq) return;
    rows = reset ? page.data : rows.concat(page.data);
    cursor = page.next_cursor;
    note.textContent = `${rows.length.toLocaleString()} device(s) shown${cursor ? "; more match" : ""}.`;
    more.hidden = !cursor;
    fill(holder, deviceTable(rows));
  }

  function setFilter(key) {
    return async (value) => {
      filters[key] = value;
      history.replaceState(null, "", overviewHash(filters));
      await load(true);
    };
  }

  const labelInput = h("input", {type: "search", name: "label", placeholder: "labels, e.g. site=lab,!retired",
    value: filters.label, "aria-label": "label selector"});
  labelInput.addEventListener("change", () => setFilter("label")(labelInput.value.trim()));
  more.addEventListener("click", () => load(false));

  const link = (key, value) => overviewHash({...Object.fromEntries(FILTERS.map((k) => [k, ""])), [key]: value});
  const byState = Object.entries(summary.by_state);
  const byHealth = Object.entries(summary.by_health).filter(([, n]) => n > 0);
  const byCohort = Object.entries(summary.by_cohort).sort((a, b) => b[1] - a[1]);
  const byVersion = summary.by_version.map((v) => [v.name === null ? "(none)" : versionKey(v), v.count,
    v.name === null ? null : link("version", versionKey(v))]);

  add(view,
    h("h1", {}, "Fleet"),
    h("div", {class: "stats"},
      stat("devices", summary.total, "devices"),
      stat("online", summary.by_state.online || 0, "online"),
      stat("degraded", summary.by_health.degraded || 0, "degraded"),
      stat("cohorts", byCohort.length, "cohorts"),
      stat("active rollouts", active.length, "rollouts"),
      stat("firing alerts", alerts.data.length, "alerts")),
    h("div", {class: "columns"},
      section("By state", bars(byState.map(([k, n]) => [k, n, link("state", k)]), {name: "state"})),
      section("By health", bars(byHealth.map(([k, n]) => [k, n, link("health", k)]), {name: "health"})),
      section("By version", bars(byVersion, {name: "version"})),
      section("By cohort", byCohort.length ? bars(byCohort.map(([k, n]) => [k, n, link("cohort", k)]),
        {name: "cohort"}) : h("p", {class: "empty"}, "No cohorts yet."))),
    active.length ? section("Active rollouts", h("ul", {class: "plain"}, active.map((r) => h("li", {},
      h("a", {href: `#/rollouts/${r.id}`}, r.name), " ", badge(r.state), ` stage ${r.stage + 1}/${r.stages}`)))) : null,
    section("Devices",
      h("div", {class: "filters"},
        select("state", [["", "any state"], ...byState.map(([k]) => [k, k])], filters.state, setFilter("state")),
        select("health", [["", "any health"], ...Object.keys(summary.by_health).map((k) => [k, k])],
          filters.health, setFilter("health")),
        select("version", [["", "any version"], ...byVersion.filter(([k]) => k !== "(none)").map(([k]) => [k, k])],
          filters.version, setFilter("version")),
        select("cohort", [["", "any cohort"], ...byCohort.map(([k]) => [k, k])], filters.cohort,
          setFilter("cohort")),
        labelInput),
      note, holder, more),
  );
  await load(true);
}
