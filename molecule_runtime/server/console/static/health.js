// A small health summary from /readyz and /metrics: mode, store, Temporal,
// tasks in flight and waiting, tokens used (this process, since it started).

import { get } from "./api.js";
import { Poller } from "./poller.js";
import { el } from "./format.js";

const POLL_MS = 5000;

export class Health {
  constructor({ config }) {
    this.config = config;
    this.box = document.getElementById("health");
    this.poller = new Poller(() => this.refresh(), POLL_MS);
  }

  start() {
    this.box.hidden = false;
    this.poller.start();
  }

  stop() {
    this.poller.stop();
  }

  async refresh() {
    const items = [];
    try {
      const ready = await (await get("readyz")).json();
      items.push(badge("status", ready.status, ready.status === "ready" ? "ok" : "bad"));
      items.push(badge("mode", ready.mode));
      items.push(badge("store", ready.store, ready.store === "ok" ? "ok" : "bad"));
      if (ready.temporal) {
        const t = ready.temporal;
        items.push(badge("temporal", t.connected ? "connected" : "unreachable", t.connected ? "ok" : "bad"));
      }
    } catch (error) {
      items.push(badge("status", "unreachable", "bad"));
      // Nothing else can be known while the server is gone.
      this.box.replaceChildren(...items);
      return;
    }
    try {
      const reply = await get("metrics");
      if (reply.ok) {
        const metrics = parseMetrics(await reply.text());
        items.push(badge("in flight", String(metrics.molecule_tasks_in_flight ?? 0)));
        items.push(badge("waiting", String(metrics.molecule_admission_queued_tasks ?? 0)));
        const tokens = (metrics.molecule_usage_input_tokens_total ?? 0)
          + (metrics.molecule_usage_output_tokens_total ?? 0);
        items.push(badge("tokens", String(tokens)));
      }
    } catch {
      // /metrics may be private or absent: the readiness badges still stand.
    }
    if (this.config.temporalUi) {
      items.push(el("a", {
        class: "badge link", href: this.config.temporalUi, target: "_blank", rel: "noopener",
        dataTestid: "temporal-ui-link", text: "Temporal UI",
      }));
    }
    this.box.replaceChildren(...items);
  }
}

function badge(label, value, tone = "") {
  return el("span", { class: `badge ${tone}`, dataHealth: label },
    el("span", { class: "muted", text: `${label} ` }), el("strong", { text: value ?? "?" }));
}

// Sums of every sample of each metric family (labels ignored).
export function parseMetrics(text) {
  const sums = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!match) continue;
    const value = Number(match[3]);
    if (!Number.isNaN(value)) sums[match[1]] = (sums[match[1]] ?? 0) + value;
  }
  return sums;
}
