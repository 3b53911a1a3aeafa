// Chat: SendStreamingMessage, the answer growing as its chunks arrive; the
// conversation continues in the same context; a question (input-required) is
// answered by sending the next message to the same task; Cancel sends CancelTask.

import { newId, rpc, rpcStream } from "./api.js";
import { META, TERMINAL, el, partsText, stateBadge, stateName, usageOf, usageText } from "./format.js";

export class Chat {
  constructor({ onTask, onDone, onUnauthorized }) {
    this.onTask = onTask;
    this.onDone = onDone;
    this.onUnauthorized = onUnauthorized;
    this.contextId = sessionStorage.getItem("molecule-console-context") || null;
    this.pendingTaskId = null; // the task waiting for the user's answer
    this.runningTaskId = null;
    this.messages = document.getElementById("messages");
    this.prompt = document.getElementById("prompt");
    this.sendButton = document.getElementById("send");
    this.cancelButton = document.getElementById("cancel");
    document.getElementById("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    this.prompt.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) {
        e.preventDefault();
        this.send();
      }
    });
    this.cancelButton.addEventListener("click", () => this.cancel());
    document.getElementById("new-conversation").addEventListener("click", () => this.reset());
    this.showContext();
  }

  reset() {
    this.contextId = null;
    this.pendingTaskId = null;
    sessionStorage.removeItem("molecule-console-context");
    this.messages.replaceChildren();
    this.showContext();
  }

  showContext() {
    const label = document.getElementById("context-id");
    label.textContent = this.contextId || "new";
    label.title = this.contextId || "";
  }

  async send() {
    const text = this.prompt.value.trim();
    if (!text || this.runningTaskId !== null || this.sendButton.disabled) return;
    this.prompt.value = "";
    const message = { role: "ROLE_USER", messageId: newId(), parts: [{ text }] };
    if (this.contextId) message.contextId = this.contextId;
    if (this.pendingTaskId) message.taskId = this.pendingTaskId;
    this.messages.append(el("div", { class: "bubble user", dataTestid: "user-message", text }));
    const bubble = new AnswerBubble(this.messages);
    this.sendButton.disabled = true;
    try {
      await this.follow(rpcStream("SendStreamingMessage", { message }), bubble);
    } catch (error) {
      if (error.name === "Unauthorized") this.onUnauthorized();
      bubble.error(String(error.message || error));
    } finally {
      this.runningTaskId = null;
      this.sendButton.disabled = false;
      this.cancelButton.disabled = true;
      this.prompt.focus();
      this.onDone();
    }
  }

  async follow(stream, bubble) {
    let state = null;
    for await (const { result } of stream) {
      if (result.task) {
        this.track(result.task.id, result.task.contextId);
        state = result.task.status?.state;
        bubble.task(result.task);
      } else if (result.statusUpdate) {
        const update = result.statusUpdate;
        this.track(update.taskId, update.contextId);
        state = update.status?.state;
        bubble.status(update);
      } else if (result.artifactUpdate) {
        bubble.chunk(result.artifactUpdate);
      } else if (result.message) {
        bubble.reply(partsText(result.message.parts));
      }
      if (state !== null) this.cancelButton.disabled = TERMINAL.has(state) || state === "TASK_STATE_INPUT_REQUIRED";
    }
    this.pendingTaskId = state === "TASK_STATE_INPUT_REQUIRED" ? this.runningTaskId : null;
    this.prompt.placeholder = this.pendingTaskId
      ? "Answer the agent's question"
      : "Message the agent (Enter sends, Shift+Enter for a new line)";
  }

  track(taskId, contextId) {
    if (taskId && taskId !== this.runningTaskId) {
      this.runningTaskId = taskId;
      this.onTask(taskId);
    }
    if (contextId && contextId !== this.contextId) {
      this.contextId = contextId;
      sessionStorage.setItem("molecule-console-context", contextId);
      this.showContext();
    }
  }

  async cancel() {
    if (!this.runningTaskId) return;
    this.cancelButton.disabled = true;
    try {
      await rpc("CancelTask", { id: this.runningTaskId });
    } catch (error) {
      if (error.name === "Unauthorized") this.onUnauthorized();
      this.messages.append(el("div", { class: "error", text: `Cancel failed: ${error.message}` }));
    }
  }
}

// One answer: its text grows with every chunk; a retry (append=false) restarts it.
class AnswerBubble {
  constructor(parent) {
    this.artifacts = new Map();
    this.text = el("div", { class: "answer-text", dataTestid: "answer-text" });
    this.statusLine = el("div", { class: "status-line muted small" });
    this.badge = el("span", {});
    this.usage = el("div", { class: "usage muted small", dataTestid: "answer-usage" });
    this.node = el(
      "div", { class: "bubble agent", dataTestid: "agent-message" },
      el("div", { class: "bubble-head" }, this.badge, el("a", { class: "task-link small" })),
      this.text, this.statusLine, this.usage,
    );
    parent.append(this.node);
    parent.scrollTop = parent.scrollHeight;
  }

  setState(state) {
    this.badge.replaceWith((this.badge = stateBadge(state)));
    this.node.dataset.state = stateName(state);
  }

  task(task) {
    this.node.dataset.taskId = task.id;
    this.node.querySelector(".task-link").textContent = `task ${task.id.slice(0, 8)}`;
    this.setState(task.status?.state);
  }

  status(update) {
    const state = update.status?.state;
    this.setState(state);
    const message = update.status?.message;
    if (message) {
      const text = partsText(message.parts);
      const question = (message.metadata || {})[META.kind] === "question"
        || state === "TASK_STATE_INPUT_REQUIRED";
      if (question) {
        this.node.append(el("div", { class: "question", dataTestid: "question", text }));
      } else {
        this.statusLine.textContent = text;
      }
    }
    const usage = usageOf(update.metadata);
    if (usage) this.usage.textContent = usageText(usage);
  }

  chunk(update) {
    const artifact = update.artifact || {};
    const id = artifact.artifactId || "answer";
    const before = update.append ? this.artifacts.get(id) || "" : "";
    this.artifacts.set(id, before + partsText(artifact.parts));
    this.text.textContent = [...this.artifacts.values()].join("\n");
    this.node.parentElement.scrollTop = this.node.parentElement.scrollHeight;
  }

  reply(text) { this.text.textContent = text; }

  error(text) { this.node.append(el("div", { class: "error", text })); }
}
