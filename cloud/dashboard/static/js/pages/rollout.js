// One rollout, live: stages with devices per state, gate figures against thresholds, transitions,
// and the operator's actions. It polls the API while the page is open.

import {api} from "../api.js";
import {stackedBar} from "../charts.js";
import {add, ago, badge, fill, fmtNum, fmtTime, h, section, table} from "../dom.js";

const POLL_MS = 2000;
const STATE_COLORS = [["committed", "#2b8a3e"], ["offered", "#2f6fde"], ["pending", "#ced4da"],
  ["failed", "#c92a2a"], ["rolled_back", "#e67700"], ["restored", "#862e9c"]];
// Which action the rollout's state allows (cloud/rollouts/machine.py); the hub has the last word.
const ALLOWED = {
  pause: ["running", "baking", "waiting_approval", "promoting"],
  resume: ["paused"],
  approve: ["waiting_approval"],
  abort: ["draft", "running", "baking", "waiting_approval", "promoting", "paused"],
};

function gateTable(gates) {
  return table([
    {title: "Gate", cell: (g) => h("code", {}, g.gate)},
    {title: "Measured", class: "num", cell: (g) => fmtNum(g.value)},
    {title: "Threshold", class: "num", cell: (g) => fmtNum(g.threshold)},
    {title: "", cell: (g) => (g.value === null ? badge("no data", "insufficient")
      : g.passed ? badge("pass") : badge("fail"))},
    {title: "Detail", cell: (g) => g.detail},
  ], gates, {empty: "Not judged yet.", rowAttrs: (g) => ({"data-gate": g.gate})});
}

function stageCard(stage) {
  const by = stage.by_state || {};
  const offered = stage.devices - (by.pending || 0);
  const figures = Object.entries(stage.figures || {}).filter(([, v]) => v !== null && typeof v !== "object");
  return h("article", {class: `stage stage-${stage.status}`, "data-stage": stage.name},
    h("header", {},
      h("h3", {}, `${stage.index + 1}. ${stage.name}`), " ", badge(stage.status),
      stage.verdict ? badge(`gates: ${stage.verdict}`, stage.verdict) : null),
    h("p", {class: "muted"},
      `cohort ${stage.cohort || "(whole fleet)"}, ${stage.percent === null ? 100 : stage.percent} %, bake ${stage.bake_s} s`
      + (stage.approval ? ", needs approval" : "")),
    h("p", {class: "counts"},
      h("span", {"data-count": "devices"}, `${stage.devices} device(s)`), " · ",
      h("span", {"data-count": "offered"}, `${offered} offered`), " · ",
      h("span", {"data-count": "serving"}, `${by.committed || 0} serving`)),
    stackedBar(STATE_COLORS.map(([key, fill]) => [key, by[key] || 0, fill]), stage.devices),
    h("ul", {class: "legend"}, STATE_COLORS.filter(([key]) => by[key]).map(([key]) =>
      h("li", {}, h("span", {class: `swatch swatch-${key}`}), `${key} ${by[key]}`))),
    stage.verdict_detail ? h("p", {}, stage.verdict_detail) : null,
    gateTable(stage.gates || []),
    figures.length ? h("details", {}, h("summary", {}, "Figures"),
      h("dl", {class: "figures"}, figures.map(([k, v]) => [h("dt", {}, k), h("dd", {}, fmtNum(v))]))) : null);
}

export async function renderRollout(view, {match}, ctx) {
  const [id] = match;
  const title = h("h1", {}, "Rollout");
  const summary = h("div", {class: "card summary"});
  const stages = h("div", {class: "stages", id: "stages"});
  const history = h("div", {id: "transitions"});
  const live = h("p", {class: "muted live", id: "live"});
  const reason = h("input", {type: "text", name: "reason", maxlength: 500, placeholder: "reason (optional)",
    "aria-label": "reason"});
  const buttons = {};
  const confirmBox = h("span", {class: "confirm", hidden: true});
  let current = null;

  async function act(action) {
    for (const b of Object.values(buttons)) b.disabled = true;
    try {
      current = await api(`/rollouts/${encodeURIComponent(current.id)}/${action}`,
        {method: "POST", body: {reason: reason.value.trim()}});
      reason.value = "";
      ctx.flash(`${action}: the rollout is now ${current.state}.`, "ok");
      paint(current);
    } catch (error) {
      ctx.flash(`${action} failed: ${error.message}`);
      if (current) paint(current);
    }
  }

  let actions = null;
  if (ctx.canOperate) {
    for (const action of Object.keys(ALLOWED)) {
      buttons[action] = h("button", {type: "button", "data-action": action,
        class: action === "abort" ? "danger" : ""}, action[0].toUpperCase() + action.slice(1));
    }
    for (const action of ["pause", "resume", "approve"]) buttons[action].addEventListener("click", () => act(action));
    // Abort gives devices their previous version back: a second click confirms it.
    buttons.abort.addEventListener("click", () => { confirmBox.hidden = false; });
    confirmBox.append("Abort and roll every offered device back? ",
      h("button", {type: "button", class: "danger", "data-action": "abort-confirm",
        onclick: () => { confirmBox.hidden = true; act("abort"); }}, "Yes, abort"),
      h("button", {type: "button", onclick: () => { confirmBox.hidden = true; }}, "Cancel"));
    actions = h("div", {class: "actions", id: "actions"}, Object.values(buttons), reason, confirmBox);
  } else {
    actions = h("p", {class: "muted", id: "read-only"},
      `Read-only: your role is ${ctx.me.role}; an operator pauses, resumes, approves and aborts rollouts.`);
  }

  function paint(r) {
    current = r;
    view.dataset.rolloutState = r.state;
    fill(title, `Rollout ${r.name} `, badge(r.state));
    title.dataset.state = r.state;
    fill(summary, h("dl", {class: "facts"},
      h("dt", {}, "target"), h("dd", {}, `${r.target.kind} ${r.target.name}:${r.target.version}`),
      h("dt", {}, "stage"), h("dd", {}, `${r.stage_name} (${r.stage + 1} of ${r.stages})`),
      h("dt", {}, "next"), h("dd", {id: "next-action"}, r.next_action || "—",
        r.next_action_at ? ` (${ago(r.next_action_at)})` : ""),
      h("dt", {}, "created"), h("dd", {}, `${fmtTime(r.created_at)} by ${r.created_by}`),
      h("dt", {}, "id"), h("dd", {}, h("code", {}, r.id))),
    r.missing_cohorts.length ? h("p", {class: "warn"}, `Deleted cohorts: ${r.missing_cohorts.join(", ")}`) : null);
    for (const [action, button] of Object.entries(buttons)) button.disabled = !ALLOWED[action].includes(r.state);
    fill(stages, r.stage_detail.map(stageCard));
    fill(history, table([
      {title: "#", class: "num", cell: (t) => t.seq},
      {title: "At", cell: (t) => fmtTime(t.at)},
      {title: "Change", cell: (t) => `${t.from_state} → ${t.to_state}`},
      {title: "Event", cell: (t) => h("code", {}, t.event)},
      {title: "Stage", class: "num", cell: (t) => t.stage + 1},
      {title: "Actor", cell: (t) => t.actor},
      {title: "Reason", cell: (t) => t.reason},
    ], [...r.transitions].reverse(), {empty: "No transitions yet.", rowAttrs: (t) => ({"data-event": t.event})}));
    live.textContent = `Live: updated ${new Date().toLocaleTimeString()}, every ${POLL_MS / 1000} s.`;
  }

  paint(await api(`/rollouts/${encodeURIComponent(id)}`));
  add(view, h("p", {}, h("a", {href: "#/rollouts"}, "← Rollouts")), title, live, actions, summary,
    section("Stages", stages), section("Transitions", history));

  let stopped = false;
  let timer = null;
  async function poll() {
    try {
      const r = await api(`/rollouts/${encodeURIComponent(id)}`);
      if (!stopped) paint(r);
    } catch (error) {
      if (!stopped) live.textContent = `Live updates failing: ${error.message}`;
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  timer = setTimeout(poll, POLL_MS);
  return () => { stopped = true; clearTimeout(timer); };
}
