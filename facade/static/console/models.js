// The models panel: one card per model (its traffic over the window, then one row per version
// with its state, workers, queue and buttons). Cards and rows are built once and updated in
// place on every refresh, so a button is never replaced under the pointer.

import { h, setText } from "./dom.js";
import { formatRate, formatSeconds, modelStats, WINDOW_S } from "./stats.js";

const STATS = [
  ["rate", "requests"], ["errors", "errors"], ["p50", "p50 latency"],
  ["p99", "p99 latency"], ["batch", "batch size"], ["total", "total requests"],
];

export class ModelsPanel {
  // onAction(action, name, version); onTry(name)
  constructor(root, { onAction, onTry }) {
    this.root = root;
    this.onAction = onAction;
    this.onTry = onTry;
    this.cards = new Map();
    this.busy = new Set(); // "name:version" while an admin call on it runs
  }

  setBusy(name, version, busy) {
    const key = `${name}:${version}`;
    if (busy) this.busy.add(key);
    else this.busy.delete(key);
  }

  render(reading, history) {
    const names = new Set(reading.models.map((m) => m.name));
    for (const [name, card] of this.cards) {
      if (!names.has(name)) {
        card.element.remove();
        this.cards.delete(name);
      }
    }
    for (const model of reading.models) {
      const card = this.cards.get(model.name) ?? this.createCard(model.name);
      this.updateCard(card, model, modelStats(history, model.name));
    }
  }

  createCard(name) {
    const stats = {};
    const statList = h("dl", { class: "stats" });
    for (const [key, label] of STATS) {
      stats[key] = h("dd", { "data-stat": key }, "—");
      statList.append(h("div", {}, h("dt", {}, label), stats[key]));
    }
    const active = h("span", { class: "muted", "data-field": "active" });
    const tryButton = h("button", { type: "button", "data-action": "try",
                                    onclick: () => this.onTry(name) }, "Try it");
    const rows = h("tbody");
    const element = h("article", { class: "model", "data-model": name },
      h("header", {}, h("h3", {}, name), active, tryButton),
      statList,
      h("table", { class: "versions" },
        h("thead", {}, h("tr", {}, ["version", "state", "workers", "queued", "consumers", ""]
          .map((label) => h("th", {}, label)))),
        rows));
    this.root.append(element);
    const card = { element, stats, active, tryButton, rows, versions: new Map() };
    this.cards.set(name, card);
    return card;
  }

  updateCard(card, model, stats) {
    setText(card.active, model.active === null ? "no active version"
      : `active: version ${model.active}`);
    card.tryButton.disabled = model.active === null;
    const s = stats ?? {};
    const windowed = s.seconds > 0;
    setText(card.stats.rate, windowed ? formatRate(s.rate) : "—");
    setText(card.stats.errors, windowed
      ? `${formatRate(s.errorRate)}${s.errorShare === null ? ""
        : ` (${(s.errorShare * 100).toFixed(1)}%)`}` : "—");
    setText(card.stats.p50, formatSeconds(s.p50));
    setText(card.stats.p99, formatSeconds(s.p99));
    setText(card.stats.batch, s.batchMean === null || s.batchMean === undefined ? "—"
      : `${s.batchMean.toFixed(1)} rows`);
    setText(card.stats.total, `${model.metrics.requests} (${model.metrics.errors} failed)`);
    for (const version of model.versions) {
      const row = card.versions.get(version.version)
        ?? this.createRow(card, model.name, version.version);
      this.updateRow(row, model.name, version);
    }
  }

  createRow(card, name, version) {
    const cells = {
      state: h("td", { "data-field": "state" }),
      workers: h("td", { "data-field": "workers", class: "ids" }),
      messages: h("td", { "data-field": "messages", class: "num" }),
      consumers: h("td", { "data-field": "consumers", class: "num" }),
    };
    const buttons = {};
    for (const action of ["activate", "load", "unload"]) {
      buttons[action] = h("button", { type: "button", "data-action": action,
                                      onclick: () => this.onAction(action, name, version) },
                          action);
    }
    const element = h("tr", { "data-version": version },
      h("td", {}, `v${version}`), cells.state, cells.workers, cells.messages, cells.consumers,
      h("td", { class: "actions" }, Object.values(buttons)));
    card.rows.append(element);
    const row = { element, cells, buttons };
    card.versions.set(version, row);
    return row;
  }

  updateRow(row, name, version) {
    const words = [];
    if (version.active) words.push("active");
    if (version.workers.length) words.push("loaded");
    else if (version.desired) words.push("loading");
    if (!version.desired && !version.workers.length) words.push("not loaded");
    if (version.failed) words.push(`failed: ${version.failed}`);
    setText(row.cells.state, words.join(" · "));
    row.element.dataset.active = String(version.active);
    row.element.dataset.loaded = String(version.workers.length > 0);
    row.cells.state.className = version.failed ? "error" : version.active ? "on" : "";
    setText(row.cells.workers, version.workers.join(", ") || "—");
    const queue = version.queue;
    // No reading: the broker was not asked about this version (not loaded), or cannot be read.
    setText(row.cells.messages, queue ? queue.messages : "—");
    setText(row.cells.consumers, queue ? queue.consumers : "—");
    const busy = this.busy.has(`${name}:${version.version}`);
    row.buttons.activate.disabled = busy || version.active;
    row.buttons.load.disabled = busy || version.desired;
    row.buttons.unload.disabled = busy || !version.desired;
  }
}

export function windowLabel(history) {
  const span = history.span();
  if (!span) return "";
  const seconds = span[1].at - span[0].at;
  return seconds >= WINDOW_S - 1 ? `· traffic over the last ${WINDOW_S} s`
    : `· traffic over the last ${Math.round(seconds)} s`;
}
