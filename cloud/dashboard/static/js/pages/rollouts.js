// Rollouts, newest first, refreshed while the page is open.

import {api} from "../api.js";
import {add, ago, badge, fill, h, select, table} from "../dom.js";

const STATES = ["draft", "running", "baking", "waiting_approval", "paused", "promoting", "completed",
  "aborting", "rolled_back", "superseded"];
const REFRESH_MS = 5000;

export async function renderRollouts(view, {query}) {
  let state = query.get("state") || "";
  const holder = h("div", {id: "rollout-table"});

  async function load() {
    const body = await api("/rollouts", {params: {state, limit: 200}});
    fill(holder, table([
      {title: "Rollout", cell: (r) => h("a", {href: `#/rollouts/${r.id}`}, r.name)},
      {title: "Target", cell: (r) => `${r.target.kind} ${r.target.name}:${r.target.version}`},
      {title: "State", cell: (r) => badge(r.state)},
      {title: "Stage", cell: (r) => `${r.stage_name} (${r.stage + 1}/${r.stages})`},
      {title: "By", cell: (r) => r.created_by},
      {title: "Updated", cell: (r) => h("span", {title: r.updated_at}, ago(r.updated_at))},
    ], body.data, {empty: "No rollouts yet: start one with `fleet rollouts create PLAN.yaml`.",
      rowAttrs: (r) => ({"data-rollout": r.id})}));
  }

  add(view, h("h1", {}, "Rollouts"),
    h("div", {class: "filters"}, select("state", [["", "any state"], ...STATES.map((st) => [st, st])], state,
      async (value) => {
        state = value;
        history.replaceState(null, "", `#/rollouts${value ? `?state=${value}` : ""}`);
        await load();
      })),
    holder);
  await load();
  const timer = setInterval(() => load().catch(() => {}), REFRESH_MS);
  return () => clearInterval(timer);
}
