// beatd dashboard: a refresh every few seconds, and the buttons, which call the API.
// The page works without this script; it only adds what needs one.
"use strict";

const TOKEN_KEY = "beatd-api-token";
const REFRESH_MS = 5000;

function notice(text, isError) {
  const box = document.getElementById("notice");
  const p = document.createElement("p");
  p.textContent = text;
  if (isError) p.className = "error";
  box.replaceChildren(p);
  setTimeout(() => { if (p.parentNode === box) p.remove(); }, 6000);
}

// Asks for the API token; resolves to it, or null when the operator cancels.
function askToken(why, refused) {
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  const reason = document.getElementById("token-why");
  reason.textContent = why;
  reason.className = refused ? "error" : "";
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok" && input.value.trim() ? input.value.trim() : null);
    }, { once: true });
    dialog.showModal();
    input.focus();
  });
}

async function post(url) {
  let token = sessionStorage.getItem(TOKEN_KEY);
  for (let tries = 0; tries < 3; tries++) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const response = await fetch(url, { method: "POST", headers, credentials: "omit", cache: "no-store" });
    if (response.status !== 401) {
      let body = {};
      try { body = await response.json(); } catch (e) { /* not JSON */ }
      return { ok: response.ok, status: response.status, body };
    }
    sessionStorage.removeItem(TOKEN_KEY);
    token = await askToken(token || tries > 0
      ? "The token was refused: it is not beatd's API token."
      : "This action needs beatd's API token.", Boolean(token) || tries > 0);
    if (!token) return { ok: false, status: 401, body: { error: "no token given" } };
    sessionStorage.setItem(TOKEN_KEY, token);
  }
  return { ok: false, status: 401, body: { error: "the token was refused" } };
}

async function act(button) {
  const url = button.dataset.post;
  button.disabled = true;
  try {
    const result = await post(url);
    if (result.ok) {
      const id = result.body && result.body.fire_id ? " (fire id " + result.body.fire_id + ")" : "";
      notice((button.dataset.done || "done") + id);
      await refresh();
    } else if (result.status === 401) {
      notice("Refused: " + (result.body.error || "missing or wrong token"), true);
    } else {
      notice("Refused: " + (result.body.error || "HTTP " + result.status), true);
    }
  } catch (e) {
    notice("Cannot reach beatd: " + e.message, true);
  } finally {
    button.disabled = false;
  }
}

// Replaces the live part of the page with a fresh copy, keeping focus and open details.
async function refresh() {
  if (document.getElementById("token-dialog").open) return;
  let text;
  try {
    const response = await fetch(location.href, { cache: "no-store", credentials: "same-origin" });
    if (!response.ok && response.status !== 404) return;
    text = await response.text();
  } catch (e) {
    return;
  }
  const fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
  const live = document.getElementById("live");
  if (!fresh || !live) return;
  const open = new Set([...live.querySelectorAll("details[open]")].map((d) => d.closest("[data-fire-id]")?.dataset.fireId));
  const focused = document.activeElement && live.contains(document.activeElement) ? document.activeElement.id : null;
  live.replaceChildren(...fresh.childNodes);
  for (const d of live.querySelectorAll("details")) {
    if (open.has(d.closest("[data-fire-id]")?.dataset.fireId)) d.open = true;
  }
  if (focused) document.getElementById(focused)?.focus();
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-post]");
  if (button) {
    event.preventDefault();
    act(button);
  }
});

setInterval(() => {
  const typing = document.activeElement && document.activeElement.matches("input");
  if (document.visibilityState === "visible" && !typing) refresh();
}, REFRESH_MS);
