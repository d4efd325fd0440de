// The hub's API as the dashboard calls it: the session cookie travels with every request
// (same origin), and every request that changes something carries the session's CSRF token.

const BASE = "/api/v1";
const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);
let csrfToken = null;

export class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail);
    this.status = status;
    this.body = body;
  }
}

export function setCsrf(token) {
  csrfToken = token || null;
}

function describe(status, body) {
  if (body && typeof body === "object") {
    if (typeof body.detail === "string" && body.detail) return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((e) => e.msg || JSON.stringify(e)).join("; ");
    if (body.title) return body.title;
  }
  if (typeof body === "string" && body.trim()) return body.trim().slice(0, 300);
  return `the hub answered HTTP ${status}`;
}

export function query(params = {}) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) q.append(key, String(v));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

/** Call the API; resolves to the decoded body, rejects with ApiError (status, detail). */
export async function api(path, {method = "GET", body, params, signal} = {}) {
  const headers = {Accept: "application/json"};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (!SAFE.has(method) && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const response = await fetch(BASE + path + query(params), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
    signal,
  });
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json().catch(() => null) : await response.text();
  if (!response.ok) {
    const error = new ApiError(response.status, describe(response.status, data), data);
    if (response.status === 401 && path !== "/session") {
      window.dispatchEvent(new CustomEvent("ef:unauthorized", {detail: error.message}));
    }
    throw error;
  }
  return data;
}

/** Every item of a cursor-paginated listing, up to maxPages pages; {items, complete}. */
export async function allPages(path, params = {}, maxPages = 50) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < maxPages; page += 1) {
    const body = await api(path, {params: {...params, cursor}});
    items.push(...body.data);
    cursor = body.next_cursor;
    if (!cursor) return {items, complete: true};
  }
  return {items, complete: false};
}

export async function currentSession() {
  const me = await api("/session");
  setCsrf(me.csrf_token);
  return me;
}

export async function login(token) {
  const me = await api("/session", {method: "POST", body: {token}});
  setCsrf(me.csrf_token);
  return me;
}

export async function logout() {
  try {
    await api("/session", {method: "DELETE"});
  } finally {
    setCsrf(null);
  }
}
