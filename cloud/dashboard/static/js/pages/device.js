// One device: what it runs in each slot, its labels, events, rollbacks and telemetry charts.

import {api} from "../api.js";
import {lineChart} from "../charts.js";
import {add, ago, badge, fmtNum, fmtTime, h, modelRef, section, table} from "../dom.js";

function slots(d) {
  const rows = [
    ["active", modelRef(d.active_model)],
    ["previous", modelRef(d.previous_model)],
    ["desired", `${modelRef(d.desired_model)}${d.desired_generation !== null ? ` (generation ${d.desired_generation})` : ""}`],
    ["applied generation", String(d.applied_generation)],
  ];
  if (d.trial) {
    rows.push(["trial", `${modelRef(d.trial.model)}, ${d.trial.mode}, ${d.trial.requests}/${d.trial.window_requests}`
      + ` requests, ends ${fmtTime(d.trial.window_ends_at)}`]);
  }
  if (d.firmware_version) rows.push(["firmware", `${d.firmware_version} (slot ${d.firmware_slot || "?"}, ${d.hardware_id})`]);
  return table([
    {title: "Slot", cell: ([k]) => k},
    {title: "Holds", cell: ([, v]) => v},
  ], rows, {rowAttrs: ([k]) => ({"data-slot": k})});
}

export async function renderDevice(view, {match}) {
  const id = match[0];
  const enc = encodeURIComponent(id);
  const [d, events, telemetry] = await Promise.all([
    api(`/devices/${enc}`),
    api(`/devices/${enc}/events`, {params: {limit: 200}}),
    api(`/devices/${enc}/telemetry`, {params: {limit: 500}}),
  ]);
  const windows = [...telemetry.data].sort((a, b) => a.window_end.localeCompare(b.window_end));
  const byVersion = (pick) => {
    const groups = new Map();
    for (const w of windows) {
      const key = `${w.model_name}:${w.model_version}`;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push({t: w.window_end, v: pick(w)});
    }
    return [...groups.entries()].map(([label, points]) => ({label, points}));
  };
  add(view, 
    h("p", {}, h("a", {href: "#/overview"}, "← Fleet")),
    h("h1", {}, `Device ${d.id} `, badge(d.state), " ", d.in_sync ? badge("in sync", "ok") : badge("not in sync", "warn")),
    h("div", {class: "card"}, h("dl", {class: "facts"},
      h("dt", {}, "health"), h("dd", {}, d.health || "—"),
      h("dt", {}, "agent"), h("dd", {}, d.agent_version || "—"),
      h("dt", {}, "last seen"), h("dd", {title: d.last_seen}, ago(d.last_seen)),
      h("dt", {}, "first seen"), h("dd", {}, fmtTime(d.first_seen)),
      h("dt", {}, "trusted root"), h("dd", {}, `version ${d.trusted_root_version}`),
      h("dt", {}, "queue"), h("dd", {}, `${d.queued_messages} queued, ${d.dropped_messages} dropped`),
      h("dt", {}, "labels"), h("dd", {}, Object.entries(d.labels).map(([k, v]) => h("code", {class: "label"}, `${k}=${v}`))))),
    h("div", {class: "columns"},
      section("Slots", slots(d)),
      section("Rollbacks", table([
        {title: "At", cell: (r) => fmtTime(r.ts)},
        {title: "Version", cell: (r) => `${r.model_name}:${r.model_version}`},
        {title: "Gate", cell: (r) => h("code", {}, r.gate)},
        {title: "Reason", cell: (r) => r.reason},
        {title: "Refused", cell: (r) => (r.refused ? "yes" : "no")},
      ], d.rollbacks, {empty: "This device never rolled a version back."}))),
    section("Telemetry", windows.length ? h("div", {class: "small-multiples"},
      lineChart({title: "Requests per window", series: byVersion((w) => w.requests), width: 360, height: 160}),
      lineChart({title: "Latency p95 (ms)", series: byVersion((w) => w.p95_ms), unit: " ms", width: 360, height: 160}),
      lineChart({title: "Error rate", width: 360, height: 160,
        series: byVersion((w) => (w.requests ? w.errors / w.requests : 0))}))
      : h("p", {class: "empty"}, "No telemetry from this device yet.")),
    section("Events", table([
      {title: "#", class: "num", cell: (e) => e.seq},
      {title: "At", cell: (e) => fmtTime(e.ts)},
      {title: "Kind", cell: (e) => badge(e.kind.toLowerCase(), "event")},
      {title: "Model", cell: (e) => (e.model_name ? `${e.model_name}:${e.model_version}` : "—")},
      {title: "Reason", cell: (e) => e.reason},
      {title: "Details", cell: (e) => Object.entries(e.details).map(([k, v]) => `${k}=${fmtNum(v)}`).join(", ")},
    ], events.data, {empty: "No events from this device yet.", rowAttrs: (e) => ({"data-seq": e.seq})})),
  );
}
