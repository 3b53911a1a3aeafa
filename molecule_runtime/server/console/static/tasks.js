// The task list: ListTasks, filtered by state and context, polled while the
// tab is visible (the list is ordered by last update, newest first).

import { isNetworkError, rpc } from "./api.js";
import { Poller } from "./poller.js";
import { META, TERMINAL, el, seconds, shortId, stateBadge, usageOf, when } from "./format.js";

const POLL_MS = 1500;

export class TaskList {
  constructor({ onOpen, onUnauthorized }) {
    this.onOpen = onOpen;
    this.onUnauthorized = onUnauthorized;
    this.rows = document.getElementById("task-rows");
    this.note = document.getElementById("tasks-note");
    this.state = document.getElementById("filter-state");
    this.context = document.getElementById("filter-context");
    this.selected = null;
    this.listedAt = null;
    this.poller = new Poller(() => this.refresh(), POLL_MS);
    this.state.addEventListener("change", () => this.refresh());
    this.context.addEventListener("input", () => this.refresh());
  }

  start() {
    this.poller.start();
  }

  stop() {
    this.poller.stop();
  }

  filterContext(contextId) {
    this.context.value = contextId;
    this.refresh();
  }

  async refresh() {
    const params = { pageSize: 50, historyLength: 0, includeArtifacts: false };
    if (this.state.value) params.status = this.state.value;
    if (this.context.value.trim()) params.contextId = this.context.value.trim();
    let page;
    try {
      page = await rpc("ListTasks", params);
    } catch (error) {
      if (error.name === "Unauthorized") {
        this.stop();
        this.onUnauthorized();
        return;
      }
      // Keep the rows, but marked as what was last seen: a row still saying
      // "working" may no longer be true.
      this.rows.closest("table").classList.add("stale");
      this.rows.closest("table").dataset.stale = "true";
      const at = this.listedAt ? ` at ${this.listedAt.toLocaleTimeString()}` : "";
      this.note.textContent = isNetworkError(error)
        ? `The server is not answering: these are the tasks as they were${at}; retrying every ${POLL_MS / 1000} s.`
        : `Could not list tasks: ${error.message}`;
      return;
    }
    this.listedAt = new Date();
    this.rows.closest("table").classList.remove("stale");
    delete this.rows.closest("table").dataset.stale;
    const tasks = page.tasks || [];
    const now = Date.now();
    this.rows.replaceChildren(...tasks.map((task) => this.row(task, now)));
    const total = page.totalSize ?? tasks.length;
    this.note.textContent = tasks.length
      ? `${tasks.length} of ${total} shown, newest first; updates every ${POLL_MS / 1000} s`
      : "No tasks yet: send a message.";
  }

  row(task, now) {
    const meta = task.metadata || {};
    const state = task.status?.state;
    const created = when(meta[META.created]);
    const updated = when(task.status?.timestamp);
    const end = TERMINAL.has(state) ? updated : now;
    const usage = usageOf(meta);
    const tokens = usage ? (usage.total_tokens ?? usage.input_tokens + usage.output_tokens) : null;
    const row = el(
      "tr",
      { dataTaskId: task.id, dataTestid: "task-row", class: task.id === this.selected ? "selected" : "" },
      el("td", {}, el("code", { text: shortId(task.id), title: `task ${task.id}\ncontext ${task.contextId}` })),
      el("td", {}, stateBadge(state)),
      el("td", { text: meta[META.mode] || "" }),
      el("td", { text: created !== null ? seconds((now - created) / 1000) : "" }),
      el("td", { text: created !== null && end !== null ? seconds((end - created) / 1000) : "" }),
      el("td", { text: String(meta[META.attempt] || 1) }),
      el("td", { text: tokens !== null ? String(tokens) : "", dataTestid: "task-tokens" }),
    );
    row.addEventListener("click", () => this.open(task.id));
    return row;
  }

  open(taskId) {
    this.selected = taskId;
    for (const row of this.rows.children) row.classList.toggle("selected", row.dataset.taskId === taskId);
    this.onOpen(taskId);
  }
}
