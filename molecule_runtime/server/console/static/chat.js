// Chat: SendStreamingMessage, the answer growing as its chunks arrive; the
// conversation continues in the same context; a question (input-required) is
// answered by sending the next message to the same task; Cancel sends CancelTask.
// After a reload the conversation is rebuilt from the task store (or a new one
// starts, saying so); if the server goes away mid-answer the answer says so and
// picks the task up again, from the last event seen, once the server is back.
// A SubscribeToTask stream stays open across questions until the task ends, so
// a followed task's current question closes it here, for the user to answer.

import { connection, get, isNetworkError, newId, rpc, rpcStream, serverOffline } from "./api.js";
import {
  META, TERMINAL, el, isEmptyChunk, partNodes, partsText, stateBadge, stateName, usageOf, usageText,
} from "./format.js";

const CONTEXT_KEY = "molecule-console-context";
const PLACEHOLDER = "Message the agent (Enter sends, Shift+Enter for a new line)";
const WAITING = new Set(["TASK_STATE_INPUT_REQUIRED", "TASK_STATE_AUTH_REQUIRED"]);

export class Chat {
  constructor({ onTask, onDone, onUnauthorized }) {
    this.onTask = onTask;
    this.onDone = onDone;
    this.onUnauthorized = onUnauthorized;
    this.contextId = sessionStorage.getItem(CONTEXT_KEY) || null;
    this.pendingTaskId = null; // the task waiting for the user's answer
    this.runningTaskId = null;
    this.generation = 0; // bumped by "New conversation": older work stops touching the page
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

  reset(note = "") {
    this.generation += 1;
    this.contextId = null;
    this.pendingTaskId = null;
    this.runningTaskId = null;
    sessionStorage.removeItem(CONTEXT_KEY);
    this.messages.replaceChildren();
    if (note) this.note(note);
    this.idle();
    this.showContext();
  }

  note(text) {
    this.messages.append(el("p", { class: "chat-note muted small", dataTestid: "chat-note", text }));
  }

  showContext() {
    const label = document.getElementById("context-id");
    label.textContent = this.contextId || "new";
    label.title = this.contextId || "";
  }

  idle() {
    this.sendButton.disabled = false;
    this.cancelButton.disabled = true;
    this.prompt.placeholder = this.pendingTaskId ? "Answer the agent's question" : PLACEHOLDER;
  }

  scrollDown() { this.messages.scrollTop = this.messages.scrollHeight; }

  // -- after a reload: the conversation as the task store has it ---------------

  async restore() {
    if (!this.contextId) return;
    const contextId = this.contextId;
    const generation = this.generation;
    let page;
    try {
      // No historyLength: all of each task's messages (a number above the
      // server's MOLECULE_MAX_HISTORY_LENGTH would be refused).
      page = await rpc("ListTasks", { contextId, pageSize: 100, includeArtifacts: true });
    } catch (error) {
      if (error.name === "Unauthorized") {
        this.onUnauthorized();
        return;
      }
      if (generation !== this.generation) return;
      this.reset(`Could not read conversation ${contextId} back (${error.message}): this is a new conversation.`);
      return;
    }
    if (generation !== this.generation) return;
    const tasks = [...(page.tasks || [])].sort((a, b) => created(a) - created(b));
    if (!tasks.length) {
      this.reset(`Conversation ${contextId} is not in the task store any more: this is a new conversation.`);
      return;
    }
    this.messages.replaceChildren();
    this.note(`Conversation ${contextId}, as stored (${tasks.length} task${tasks.length > 1 ? "s" : ""}).`);
    for (const task of tasks) renderStored(this.messages, task);
    this.scrollDown();
    const last = tasks[tasks.length - 1];
    const state = last.status?.state;
    if (WAITING.has(state)) {
      this.pendingTaskId = last.id;
      this.idle();
    } else if (!TERMINAL.has(state)) {
      // Still running: follow it live, its answer rebuilt from the event log.
      const bubble = AnswerBubble.last(this.messages) || new AnswerBubble(this.messages);
      // The replay also passes earlier turns' chunks: shown above already.
      bubble.turn = (last.history || []).filter((m) => m.role === "ROLE_USER").length || null;
      this.runningTaskId = last.id;
      this.sendButton.disabled = true;
      await this.run(
        generation, bubble, () => rpcStream("SubscribeToTask", { id: last.id }, { lastEventId: 0 }), true,
      );
    }
  }

  // -- sending -------------------------------------------------------------------

  async send() {
    const text = this.prompt.value.trim();
    if (!text || this.runningTaskId !== null || this.sendButton.disabled) return;
    this.prompt.value = "";
    const message = { role: "ROLE_USER", messageId: newId(), parts: [{ text }] };
    if (this.contextId) message.contextId = this.contextId;
    if (this.pendingTaskId) message.taskId = this.pendingTaskId;
    this.messages.append(el("div", { class: "bubble user", dataTestid: "user-message", text }));
    const bubble = new AnswerBubble(this.messages);
    this.scrollDown();
    this.sendButton.disabled = true;
    await this.run(this.generation, bubble, () => rpcStream("SendStreamingMessage", { message }));
  }

  // Follows one task's stream into `bubble` until the task ends or waits for
  // input; when the server goes away first, waits for it and follows the task
  // again from the last event seen. `subscribed`: `open` subscribes to the task
  // (SubscribeToTask) rather than sending to it.
  async run(generation, bubble, open, subscribed = false) {
    const seen = { state: null, lastId: null };
    let stream = open();
    let subscription = subscribed;
    try {
      for (;;) {
        let broken = null;
        try {
          await this.follow(stream, bubble, seen, generation, subscription);
        } catch (error) {
          if (error.name === "Unauthorized") {
            this.onUnauthorized();
            bubble.error(error.message);
            break;
          }
          if (!isNetworkError(error)) {
            bubble.error(String(error.message || error));
            break;
          }
          broken = error;
        }
        if (generation !== this.generation) return;
        if (!broken && (TERMINAL.has(seen.state) || WAITING.has(seen.state))) break;
        // The stream ended (or broke) before the task did: the server went away.
        if (!this.runningTaskId) {
          bubble.error(`The server did not answer (${broken ? broken.message : "no reply"}): the message may not have been taken. Send it again once the server is back.`);
          break;
        }
        const since = serverOffline() || new Date();
        bubble.lost(since);
        this.cancelButton.disabled = true; // nothing to send it to; back with the task's events
        // A stream closed by a server that still answers is followed again
        // after a pause, never in a tight loop.
        if (!broken) await new Promise((resolve) => setTimeout(resolve, 1000));
        await waitForServer(() => generation !== this.generation);
        if (generation !== this.generation) return;
        bubble.back(since, new Date());
        stream = rpcStream("SubscribeToTask", { id: this.runningTaskId }, { lastEventId: seen.lastId ?? 0 });
        subscription = true;
      }
    } finally {
      if (generation === this.generation) {
        this.pendingTaskId = WAITING.has(seen.state) ? this.runningTaskId : null;
        this.runningTaskId = null;
        this.idle();
        this.prompt.focus();
        this.onDone();
      }
    }
  }

  // Reads `stream` until it ends; a subscription (which stays open across
  // questions) is left at the task's current question: leaving the loop closes it.
  async follow(stream, bubble, seen, generation, subscription) {
    for await (const { id, result } of stream) {
      if (generation !== this.generation) return;
      if (id !== null && id !== undefined) seen.lastId = id;
      const state = result.task ? result.task.status?.state : result.statusUpdate?.status?.state;
      const current = subscription && WAITING.has(state) ? await this.currentQuestion(result) : null;
      if (generation !== this.generation) return;
      if (current === false && result.statusUpdate) {
        // An earlier turn's question, passed by a replay: answered since (the
        // restored conversation shows it), so not asked again here.
        this.track(result.statusUpdate.taskId, result.statusUpdate.contextId);
        seen.state = state;
        continue;
      }
      if (result.task) {
        this.track(result.task.id, result.task.contextId);
        seen.state = result.task.status?.state;
        bubble.task(result.task);
      } else if (result.statusUpdate) {
        const update = result.statusUpdate;
        this.track(update.taskId, update.contextId);
        seen.state = update.status?.state;
        bubble.status(update);
      } else if (result.artifactUpdate) {
        const turn = turnOf(result.artifactUpdate.taskId, result.artifactUpdate.artifact?.artifactId);
        if (!(bubble.turn && turn !== null && turn < bubble.turn)) bubble.chunk(result.artifactUpdate);
      } else if (result.message) {
        seen.state = "TASK_STATE_COMPLETED"; // a reply message ends the exchange
        bubble.reply(result.message);
      }
      if (seen.state !== null) {
        this.cancelButton.disabled = TERMINAL.has(seen.state) || WAITING.has(seen.state);
      }
      if (current) return;
    }
  }

  // Whether a question seen on a subscription is the task's question now: a
  // replay (Last-Event-ID) also passes the questions of earlier turns, which
  // were answered since. The stored task tells: still waiting, on the same
  // question (its message, else its status time). null: not known (the
  // question shows, the stream is read on).
  async currentQuestion(result) {
    const status = (result.task || result.statusUpdate).status || {};
    const history = result.task?.history || [];
    // The task as stored when an answer came in: the question moved to its
    // history, the answer after it.
    if (result.task && !status.message && history.length && history[history.length - 1].role === "ROLE_USER") {
      return false;
    }
    let task;
    try {
      const id = result.task ? result.task.id : result.statusUpdate.taskId;
      task = await rpc("GetTask", { id, historyLength: 1 });
    } catch {
      return null;
    }
    const stored = task.status || {};
    if (!WAITING.has(stored.state)) return false;
    const asked = status.message?.messageId;
    if (asked && stored.message?.messageId) return asked === stored.message.messageId;
    const now = stored.timestamp || "";
    const then = status.timestamp || "";
    return now === then || !(Date.parse(now) >= Date.parse(then));
  }

  track(taskId, contextId) {
    if (taskId && taskId !== this.runningTaskId) {
      this.runningTaskId = taskId;
      this.onTask(taskId);
    }
    if (contextId && contextId !== this.contextId) {
      this.contextId = contextId;
      sessionStorage.setItem(CONTEXT_KEY, contextId);
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

function created(task) {
  const t = Date.parse((task.metadata || {})[META.created] || task.status?.timestamp || "");
  return Number.isNaN(t) ? 0 : t;
}

// Until the server is back and ready (checked every second; a server that
// answers but cannot yet serve tasks is not back), or `stop()` says to give up.
async function waitForServer(stop) {
  for (;;) {
    if (stop()) return;
    try {
      if ((await get("readyz")).ok) return;
    } catch {
      // Still gone.
    }
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 1000);
      connection.addEventListener("online", () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }
}

// The turn an artifact belongs to, from its id: `<task>-answer` and
// `<task>-answer.<name>` are turn 1, `<task>-answer-<n>[.<name>]` turn n.
function turnOf(taskId, artifactId) {
  const prefix = `${taskId}-answer`;
  if (!artifactId || !artifactId.startsWith(prefix)) return null;
  const match = artifactId.slice(prefix.length).match(/^(?:-(\d+))?(?:\.|$)/);
  return match ? Number(match[1] || 1) : null;
}

// A stored task as the chat showed it: the user's messages, the agent's
// questions, each turn's artifacts, and the final state with its message.
function renderStored(parent, task) {
  const turns = new Map();
  let lastTurn = 0;
  for (const artifact of task.artifacts || []) {
    const turn = turnOf(task.id, artifact.artifactId) ?? -1;
    if (!turns.has(turn)) turns.set(turn, []);
    turns.get(turn).push(artifact);
  }
  let turn = 0;
  for (const message of task.history || []) {
    const text = partsText(message.parts);
    if (message.role === "ROLE_USER") {
      turn += 1;
      parent.append(el("div", { class: "bubble user", dataTestid: "user-message", dataRestored: "true", text }));
    } else if (turn > 0 && (message.metadata || {})[META.kind] === "question") {
      // The question that ended a turn (other agent messages, e.g. a retry's
      // notice, are the timeline's business).
      const bubble = new AnswerBubble(parent, { restored: true });
      bubble.task(task);
      bubble.setState("TASK_STATE_INPUT_REQUIRED");
      bubble.artifactsFrom(turns.get(turn) || []);
      bubble.question(text);
      lastTurn = turn;
    }
  }
  if (lastTurn === turn && turn > 0 && WAITING.has(task.status?.state)) return;
  const bubble = new AnswerBubble(parent, { restored: true });
  bubble.task(task);
  const rest = [...turns.entries()].filter(([t]) => t > lastTurn || t === -1).flatMap(([, a]) => a);
  bubble.artifactsFrom(rest);
  bubble.status({ status: task.status, metadata: task.metadata });
}

// One answer: its text grows with every chunk; a retry (append=false) restarts
// it. Artifacts other than the answer's text (files, data, named ones) show
// below it, files as links to open or download.
class AnswerBubble {
  static last(parent) {
    const nodes = parent.querySelectorAll("[data-testid=agent-message]");
    return nodes.length ? nodes[nodes.length - 1].bubble || null : null;
  }

  constructor(parent, { restored = false } = {}) {
    this.parent = parent;
    this.turn = null; // the task turn it shows, when known
    this.artifacts = new Map(); // artifactId -> {name, parts}
    this.text = el("div", { class: "answer-text", dataTestid: "answer-text" });
    this.extras = el("div", { class: "answer-extras", dataTestid: "answer-artifacts" });
    this.statusLine = el("div", { class: "status-line small", dataTestid: "status-message" });
    this.connectionLine = el("div", { class: "connection-line small", dataTestid: "connection" });
    this.badge = el("span", {});
    this.usage = el("div", { class: "usage muted small", dataTestid: "answer-usage" });
    this.node = el(
      "div", { class: "bubble agent", dataTestid: "agent-message", dataRestored: restored ? "true" : null },
      el("div", { class: "bubble-head" }, this.badge, el("a", { class: "task-link small" })),
      this.text, this.extras, this.statusLine, this.connectionLine, this.usage,
    );
    this.node.bubble = this;
    parent.append(this.node);
  }

  // Applies `change`, then keeps the newest line in view if the chat was
  // scrolled to the bottom before (a reader scrolled up is left alone).
  update(change) {
    const box = this.parent;
    const follow = box.scrollHeight - box.scrollTop - box.clientHeight < 48;
    change();
    if (follow) box.scrollTop = box.scrollHeight;
  }

  setState(state) {
    this.badge.replaceWith((this.badge = stateBadge(state)));
    this.node.dataset.state = stateName(state);
  }

  task(task) {
    this.update(() => {
      this.node.dataset.taskId = task.id;
      this.node.querySelector(".task-link").textContent = `task ${task.id.slice(0, 8)}`;
      this.setState(task.status?.state);
    });
  }

  status(update) {
    this.update(() => {
      const state = update.status?.state;
      this.setState(state);
      const message = update.status?.message;
      if (message) {
        const text = partsText(message.parts);
        const question = (message.metadata || {})[META.kind] === "question" || WAITING.has(state);
        if (question) this.question(text);
        else this.statusLine.textContent = text;
      }
      const usage = usageOf(update.metadata);
      if (usage) this.usage.textContent = usageText(usage);
    });
  }

  question(text) {
    this.node.append(el("div", { class: "question", dataTestid: "question", text }));
  }

  chunk(update) {
    const artifact = update.artifact || {};
    const id = artifact.artifactId || "answer";
    const known = this.artifacts.get(id);
    if (update.append && isEmptyChunk(artifact.parts)) return;
    const before = update.append && known ? known.parts : [];
    this.artifacts.set(id, { name: artifact.name || known?.name || "", parts: [...before, ...(artifact.parts || [])] });
    this.render();
  }

  artifactsFrom(artifacts) {
    for (const a of artifacts) this.artifacts.set(a.artifactId, { name: a.name || "", parts: a.parts || [] });
    this.render();
  }

  render() {
    this.update(() => {
      const texts = [];
      const extras = [];
      for (const { name, parts } of this.artifacts.values()) {
        if (name === "answer" || name === "") {
          const text = parts.filter((p) => p.text !== undefined).map((p) => p.text).join("");
          if (text) texts.push(text);
          const others = parts.filter((p) => p.text === undefined);
          if (others.length) extras.push(el("div", { class: "answer-artifact" }, ...partNodes(others)));
        } else {
          extras.push(el("div", { class: "answer-artifact", dataArtifact: name },
            el("div", { class: "muted small", text: name }), ...partNodes(parts)));
        }
      }
      this.text.textContent = texts.join("\n");
      this.extras.replaceChildren(...extras);
    });
  }

  reply(message) {
    this.update(() => {
      this.setState("TASK_STATE_COMPLETED");
      this.artifacts.set("reply", { name: "answer", parts: message.parts || [] });
    });
    this.render();
  }

  lost(since) {
    this.update(() => {
      this.node.dataset.connection = "lost";
      this.connectionLine.className = "connection-line small error";
      this.connectionLine.textContent = `The server stopped answering at ${since.toLocaleTimeString()}: `
        + "waiting for it to come back to show what became of this task…";
    });
  }

  back(since, now) {
    this.update(() => {
      this.node.dataset.connection = "back";
      this.connectionLine.className = "connection-line small muted";
      this.connectionLine.textContent = `The server was unreachable from ${since.toLocaleTimeString()} `
        + `to ${now.toLocaleTimeString()}; above: what became of the task.`;
    });
  }

  error(text) {
    this.update(() => this.node.append(el("div", { class: "error", text })));
  }
}
