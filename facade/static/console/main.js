// The console: poll /console/api/state every POLL_MS, render it, and wire the buttons.

import { admin, setToken, state, token } from "./api.js";
import { h, setText } from "./dom.js";
import { ModelsPanel, windowLabel } from "./models.js";
import { History } from "./stats.js";
import { TryIt } from "./tryit.js";

const POLL_MS = 2000;

const $ = (id) => document.getElementById(id);
const history = new History();
let timer = null;

function notice(message, kind = "info") {
  const element = $("notice");
  element.textContent = message;
  element.dataset.kind = kind;
}

const panel = new ModelsPanel($("models"), {
  onAction: runAdmin,
  onTry: (name) => {
    tryIt.show(name);
    $("try").scrollIntoView({ behavior: "smooth" });
  },
});

const tryIt = new TryIt({
  select: $("try-model"), inputs: $("try-inputs"), version: $("try-version"),
  form: $("try-form"), output: $("try-output"), send: $("try-send"),
});

async function runAdmin(action, name, version) {
  panel.setBusy(name, version, true);
  refreshSoon(0);
  notice(`${action} ${name} version ${version}: waiting for the workers…`);
  try {
    const result = await admin(action, name, version);
    notice(`${action} ${name} version ${version}: done. Active: ${result.active ?? "none"}; ` +
           `loaded: ${result.loaded.join(", ") || "none"}`, "ok");
  } catch (exc) {
    notice(`${action} ${name} version ${version} failed: ${exc.code}: ${exc.message}`, "error");
  } finally {
    panel.setBusy(name, version, false);
    refreshSoon(0);
  }
}

function renderHealth(reading) {
  const pill = $("health");
  pill.dataset.state = reading.ready ? "ready" : "not-ready";
  setText(pill, reading.ready ? "ready"
    : `not ready: waiting for ${reading.waiting_for.join(", ")}`);
  setText($("refreshed"), `updated ${new Date(reading.at * 1000).toLocaleTimeString()}`);
  setText($("grpc"), reading.grpc.port === null ? "gRPC off"
    : `gRPC on port ${reading.grpc.port}${reading.grpc.tls ? " (TLS)" : ""}`);
  setText($("window"), windowLabel(history));
  setText($("dead-letters"), reading.dead_letters === null ? ""
    : `· dead-letter queue: ${reading.dead_letters} messages`);
  setText($("repository-errors"), reading.repository_errors.join("\n"));
}

function renderWorkers(reading) {
  const now = reading.at;
  $("workers").tBodies[0].replaceChildren(...reading.workers.map((w) => h("tr",
    { "data-worker": w.id },
    h("td", { class: "ids" }, w.id), h("td", {}, w.host), h("td", {}, w.device),
    h("td", { class: "num" }, w.capacity),
    h("td", {}, Object.entries(w.loaded).map(([m, vs]) => `${m} v${vs.join(", v")}`).join("; ")
      || "—"),
    h("td", { class: "num" }, uptime(now - w.started_at)))));
}

function uptime(seconds) {
  if (seconds < 120) return `${Math.max(0, Math.round(seconds))} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

async function refresh() {
  timer = null;
  try {
    const reading = await state();
    history.add(reading);
    renderHealth(reading);
    panel.render(reading, history);
    renderWorkers(reading);
    tryIt.setModels(reading.models.filter((m) => m.active !== null).map((m) => m.name));
    if ($("notice").dataset.kind === "auth") notice("");
  } catch (exc) {
    const pill = $("health");
    pill.dataset.state = "unknown";
    if (exc.status === 401) {
      setText(pill, "token needed");
      notice("This server needs a bearer token: type it above.", "auth");
    } else {
      setText(pill, `unreachable: ${exc.message}`);
    }
  } finally {
    refreshSoon(POLL_MS);
  }
}

function refreshSoon(ms) {
  if (timer !== null) clearTimeout(timer);
  timer = setTimeout(refresh, ms);
}

$("token").value = token();
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken($("token").value.trim());
  notice($("token").value ? "Token kept for this tab." : "No token.");
  refreshSoon(0);
});
$("token-clear").addEventListener("click", () => {
  $("token").value = "";
  setToken("");
  notice("Token forgotten.");
  refreshSoon(0);
});

refreshSoon(0);
