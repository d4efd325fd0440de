// The login page: an API token in, a session cookie (HttpOnly) and a CSRF token out.

import {login} from "../api.js";
import {add, h} from "../dom.js";

export function renderLogin(view, {onLogin}) {
  const input = h("input", {type: "password", name: "token", id: "token", autocomplete: "off",
    required: true, spellcheck: "false", placeholder: "ef_…"});
  const error = h("p", {class: "form-error", id: "login-error", role: "alert", hidden: true});
  const button = h("button", {type: "submit", class: "primary"}, "Log in");
  const form = h("form", {class: "card login", id: "login-form"},
    h("h2", {}, "Log in to the fleet dashboard"),
    h("p", {}, "Paste an API token of this hub (", h("code", {}, "fleet tokens create"),
      "). Viewers read; operators also pause, resume, approve and abort rollouts."),
    h("label", {for: "token"}, "API token"), input, button, error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    button.disabled = true;
    try {
      const session = await login(input.value.trim());
      input.value = "";
      onLogin(session);
    } catch (e) {
      error.textContent = e.status === 401 ? `That token was refused: ${e.message}` : e.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  add(view, form);
  input.focus();
}
