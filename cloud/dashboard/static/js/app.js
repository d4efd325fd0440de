// The dashboard's shell: session, navigation and the hash router that renders one page at a time.

import {ApiError, currentSession, logout} from "./api.js";
import {add, clear, fill, h} from "./dom.js";
import {renderLogin} from "./pages/login.js";
import {renderOverview} from "./pages/overview.js";
import {renderRollouts} from "./pages/rollouts.js";
import {renderRollout} from "./pages/rollout.js";
import {renderDrift} from "./pages/drift.js";
import {renderAlerts, renderAlert} from "./pages/alerts.js";
import {renderDevice} from "./pages/device.js";
import {renderAudit} from "./pages/audit.js";

const ROLES = ["viewer", "operator", "admin"];

// [pattern, nav key, render(view, params, ctx)]; a render may return a function that stops it.
const ROUTES = [
  [/^\/overview$/, "overview", renderOverview],
  [/^\/rollouts$/, "rollouts", renderRollouts],
  [/^\/rollouts\/([^/]+)$/, "rollouts", renderRollout],
  [/^\/drift$/, "drift", renderDrift],
  [/^\/alerts$/, "alerts", renderAlerts],
  [/^\/alerts\/(\d+)$/, "alerts", renderAlert],
  [/^\/devices\/([^/]+)$/, "overview", renderDevice],
  [/^\/audit$/, "audit", renderAudit],
];

const view = document.getElementById("view");
const flash = document.getElementById("flash");
let me = null;
let stopPage = null;
let renderSeq = 0;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/overview";
  const [path, q = ""] = raw.split("?");
  return {path, params: new URLSearchParams(q)};
}

export function showFlash(message, kind = "error") {
  flash.textContent = message;
  flash.className = `flash flash-${kind}`;
  flash.hidden = !message;
}

function setSession(session) {
  me = session;
  document.getElementById("nav").hidden = !me;
  document.getElementById("who").hidden = !me;
  document.body.dataset.role = me ? me.role : "";
  if (me) {
    document.getElementById("who-name").textContent = me.name;
    document.getElementById("who-role").textContent = me.role;
  }
}

function context() {
  return {
    me,
    canOperate: Boolean(me) && ROLES.indexOf(me.role) >= ROLES.indexOf("operator"),
    flash: showFlash,
    isCurrent: null,
  };
}

async function route() {
  const seq = ++renderSeq;
  if (stopPage) { stopPage(); stopPage = null; }
  showFlash("");
  clear(view);
  view.dataset.state = "loading";
  const {path, params} = parseHash();
  if (!me) {
    // The login page shows at the address asked for, so that the page itself follows the login.
    view.dataset.page = "login";
    renderLogin(view, {onLogin: (session) => {
      setSession(session);
      route();
    }});
    view.dataset.state = "ready";
    return;
  }
  if (path === "/login") {
    location.replace("#/overview");
    return;
  }
  for (const [pattern, nav, render] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    view.dataset.page = nav;
    for (const a of document.querySelectorAll("[data-nav]")) {
      a.classList.toggle("active", a.dataset.nav === nav);
    }
    const ctx = context();
    ctx.isCurrent = () => seq === renderSeq;
    // Each render draws into a container of its own: a slow, superseded render then fills a container
    // that is no longer in the page instead of mixing into the next page.
    const root = h("div", {class: "page"});
    view.append(root);
    try {
      const stop = await render(root, {match: match.slice(1).map(decodeURIComponent), query: params}, ctx);
      if (seq !== renderSeq) { if (typeof stop === "function") stop(); return; }
      stopPage = typeof stop === "function" ? stop : null;
      view.dataset.state = "ready";
    } catch (error) {
      if (seq !== renderSeq) return;
      if (error instanceof ApiError && error.status === 401) return;  // the login page takes over
      fill(view, h("section", {class: "card error"}, h("h2", {}, "Could not load this page"),
        h("p", {}, error.message || String(error))));
      view.dataset.state = "error";
    }
    return;
  }
  view.dataset.page = "missing";
  add(view, h("section", {class: "card"}, h("h2", {}, "No such page"), h("a", {href: "#/overview"}, "Fleet overview")));
  view.dataset.state = "ready";
}

window.addEventListener("hashchange", route);
window.addEventListener("ef:unauthorized", async (event) => {
  if (!me) return;
  setSession(null);
  await route();
  showFlash(`Your session ended (${event.detail}); log in again.`);
});
document.getElementById("logout").addEventListener("click", async () => {
  try {
    await logout();
  } catch (error) {
    showFlash(`Logging out failed: ${error.message}`);
    return;
  }
  setSession(null);
  history.replaceState(null, "", "#/overview");
  route();
});

async function start() {
  try {
    setSession(await currentSession());
  } catch (error) {
    setSession(null);
    if (!(error instanceof ApiError) || error.status !== 401) {
      showFlash(`Cannot reach the hub's API: ${error.message}`);
    }
  }
  route();
}

start();
