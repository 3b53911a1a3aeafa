// One task's timeline: SubscribeToTask with `Last-Event-ID: 0` replays its
// logged events (each with its offset), then follows it live until it ends.
// GetTask gives the stored result: artifacts, usage per attempt; the console's
// steps route the task's durable steps (which attempt recorded each, which replayed it).

import { get, isNetworkError, rpc, rpcStream } from "./api.js";
import {
  META, TERMINAL, el, isEmptyChunk, partNodes, partsText, stateBadge, stateName, usageOf, usageText,
} from "./format.js";

export class Timeline {
  constructor({ config, onUnauthorized }) {
    this.config = config;
    this.onUnauthorized = onUnauthorized;
    this.panel = document.getElementById("timeline");
    this.events = document.getElementById("timeline-events");
    this.note = document.getElementById("timeline-note");
    this.abort = null;
    this.taskId = null;
    document.getElementById("timeline-close").addEventListener("click", () => this.close());
  }

  close() {
    if (this.abort) this.abort.abort();
    this.abort = null;
    this.taskId = null;
    this.panel.hidden = true;
  }

  // After the server was away: the open timeline, read again if it was cut off.
  reopen() {
    if (this.taskId !== null && this.lost) this.open(this.taskId);
  }

  async open(taskId) {
    this.close();
    this.lost = false;
    this.taskId = taskId;
    this.panel.hidden = false;
    document.getElementById("timeline-id").textContent = taskId;
    this.events.replaceChildren();
    this.note.textContent = "";
    const abort = (this.abort = new AbortController());
    await this.load(taskId);
    try {
      const stream = rpcStream("SubscribeToTask", { id: taskId }, { signal: abort.signal, lastEventId: 0 });
      for await (const { id, result } of stream) {
        if (this.taskId !== taskId) return;
        // An empty appended chunk only marks the answer's end: nothing to read
        // (an empty replacing one clears a retried answer: that one shows).
        const update = result.artifactUpdate;
        if (update && update.append && isEmptyChunk(update.artifact?.parts)) continue;
        this.events.append(this.eventRow(id, result));
        if (result.statusUpdate) await this.load(taskId);
      }
      if (this.taskId === taskId) this.note.textContent = "End of the event log (the task is not running).";
    } catch (error) {
      if (error.name === "AbortError" || this.taskId !== taskId) return;
      if (error.name === "Unauthorized") {
        this.onUnauthorized();
        return;
      }
      if (isNetworkError(error)) {
        this.lost = true;
        this.note.textContent = "The server stopped answering: above is what it sent until then; "
          + "the timeline reloads when the server is back.";
        return;
      }
      // e.g. TASK_STORE_URL=memory keeps no log: the stored task is all there is.
      this.note.textContent = `No event log to replay: ${error.message}`;
    }
    if (this.taskId === taskId) await this.load(taskId);
  }

  async load(taskId) {
    let task;
    try {
      task = await rpc("GetTask", { id: taskId });
    } catch (error) {
      if (error.name === "Unauthorized") this.onUnauthorized();
      else this.note.textContent = `GetTask failed: ${error.message}`;
      return;
    }
    if (this.taskId !== taskId) return;
    const meta = task.metadata || {};
    const state = document.getElementById("timeline-state");
    state.replaceWith(Object.assign(stateBadge(task.status?.state), { id: "timeline-state" }));
    this.temporalLink(task, meta);
    this.usage(usageOf(meta));
    const artifacts = document.getElementById("timeline-artifacts");
    artifacts.replaceChildren(
      ...(task.artifacts || []).map((a) => el(
        "div", { class: "artifact" },
        el("div", { class: "muted small", text: `${a.name || "artifact"} · ${a.artifactId}` }),
        ...partNodes(a.parts),
      )),
    );
    if (!TERMINAL.has(task.status?.state)) artifacts.dataset.live = "true";
    else delete artifacts.dataset.live;
    await this.steps(taskId);
  }

  async steps(taskId) {
    const box = document.getElementById("timeline-steps");
    let body;
    try {
      const reply = await get(`console/tasks/${encodeURIComponent(taskId)}/steps`);
      if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
      body = await reply.json();
    } catch (error) {
      if (error.name === "Unauthorized") {
        this.onUnauthorized();
        return;
      }
      if (this.taskId === taskId) {
        box.replaceChildren(el("p", { class: "muted small", text: `Steps not read: ${error.message}` }));
      }
      return;
    }
    if (this.taskId !== taskId) return;
    const steps = body.steps || [];
    if (!steps.length) {
      box.replaceChildren(el("p", { class: "muted small", text: "No durable steps recorded." }));
      return;
    }
    const rows = steps.map((s) => el(
      "tr", {
        dataTestid: "step-row",
        dataAttempt: s.attempt ?? "",
        dataReplayedBy: s.replayedBy ? s.replayedBy.join(",") : "",
      },
      el("td", { text: String(s.turn) }), el("td", { text: String(s.seq) }),
      el("td", { text: s.name }),
      el("td", { text: time(s.recordedAt), title: s.recordedAt }),
      el("td", { text: s.attempt === null ? "not known" : `attempt ${s.attempt}` }),
      el("td", { class: "replays", text: replays(s) }),
    ));
    box.replaceChildren(
      el("table", { class: "steps-table" },
        el("thead", {}, el("tr", {}, ...["turn", "#", "step", "recorded", "by", "replayed"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...rows)),
    );
  }

  temporalLink(task, meta) {
    const link = document.getElementById("timeline-temporal");
    const ui = this.config.temporalUi;
    if (meta[META.mode] !== "durable" || !ui) {
      link.hidden = true;
      return;
    }
    const workflow = this.config.workflowId.replace("{taskId}", task.id);
    link.href = `${ui}/namespaces/${encodeURIComponent(this.config.namespace)}/workflows/${encodeURIComponent(workflow)}`;
    link.hidden = false;
  }

  usage(usage) {
    const box = document.getElementById("timeline-usage");
    if (!usage) {
      box.replaceChildren(el("p", { class: "muted small", text: "No usage reported by the adapter." }));
      return;
    }
    const rows = (usage.attempts || []).map((a) => el(
      "tr", {},
      el("td", { text: String(a.turn) }), el("td", { text: String(a.attempt) }),
      el("td", { text: a.model || "" }), el("td", { text: String(a.input_tokens) }),
      el("td", { text: String(a.output_tokens) }), el("td", { text: a.cost !== undefined ? String(a.cost) : "" }),
    ));
    box.replaceChildren(
      el("p", { dataTestid: "usage-total", text: `Usage: ${usageText(usage)}` }),
      el("table", { class: "usage-table" },
        el("thead", {}, el("tr", {}, ...["turn", "attempt", "model", "in", "out", "cost"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...rows)),
    );
  }

  eventRow(offset, result) {
    const row = el("li", { class: "event", dataTestid: "timeline-event" });
    row.append(el("span", { class: "offset", text: offset ?? "–", title: "offset in the event log" }));
    if (result.task) {
      row.dataset.kind = "task";
      row.append(el("span", { class: "kind", text: "task" }), stateBadge(result.task.status?.state),
        el("span", { class: "muted small", text: time(result.task.status?.timestamp) }));
    } else if (result.statusUpdate) {
      const status = result.statusUpdate.status || {};
      row.dataset.kind = "status";
      row.append(el("span", { class: "kind", text: "status" }), stateBadge(status.state),
        el("span", { class: "muted small", text: time(status.timestamp) }));
      const text = status.message ? partsText(status.message.parts) : "";
      if (text) row.append(el("span", { class: stateName(status.state) === "input-required" ? "question" : "detail", text }));
      const usage = usageOf(result.statusUpdate.metadata);
      if (usage) row.append(el("span", { class: "detail usage", text: `usage: ${usageText(usage)}` }));
    } else if (result.artifactUpdate) {
      const update = result.artifactUpdate;
      row.dataset.kind = "artifact";
      const name = update.artifact?.name;
      const flags = [
        name && name !== "answer" ? name : "", update.append ? "append" : "replace", update.lastChunk ? "last" : "",
      ].filter(Boolean);
      row.append(el("span", { class: "kind", text: "chunk" }),
        el("span", { class: "muted small", text: flags.join(", ") }),
        el("span", { class: "detail chunk", text: JSON.stringify(partsText(update.artifact?.parts)) }));
    } else if (result.message) {
      row.dataset.kind = "message";
      row.append(el("span", { class: "kind", text: "message" }), el("span", { class: "detail", text: partsText(result.message.parts) }));
    }
    return row;
  }
}

// Who replayed a step: later attempts that got its result back without running it.
function replays(step) {
  // Recorded before the journal noted attempts: its replays were not kept either.
  if (!step.replayedBy) return "not known";
  if (!step.replayedBy.length) return "no";
  return `by attempt ${step.replayedBy.join(", ")}`;
}

function time(timestamp) {
  const t = Date.parse(timestamp || "");
  return Number.isNaN(t) ? "" : new Date(t).toLocaleTimeString();
}
