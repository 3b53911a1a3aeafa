// Start-up: with auth on, nothing is shown (or fetched beyond /console/config,
// which answers 401) until the user enters a token that the server accepts.

import { clearToken, connection, get, setToken, token } from "./api.js";
import { Chat } from "./chat.js";
import { Health } from "./health.js";
import { TaskList } from "./tasks.js";
import { Timeline } from "./timeline.js";

const gate = document.getElementById("gate");
const app = document.getElementById("app");
// Built once (they bind event handlers); stopped while the gate is shown.
let panels = null;

function showGate(message = "") {
  if (panels) {
    panels.tasks.stop();
    panels.health.stop();
    panels.timeline.close();
  }
  app.hidden = true;
  document.getElementById("health").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("offline").hidden = true;
  document.getElementById("agent-name").textContent = "";
  gate.hidden = false;
  document.getElementById("gate-error").textContent = message;
  document.getElementById("gate-token").focus();
}

async function boot() {
  const bootError = document.getElementById("boot-error");
  let reply;
  try {
    reply = await get("console/config");
  } catch (error) {
    if (error.name === "Unauthorized") {
      showGate(token() ? "That token was refused." : "");
      if (token()) clearToken();
      return;
    }
    // Down or restarting: try again until it answers (no reload needed).
    bootError.textContent = `The runtime did not answer (${error.message}); trying again every 2 s…`;
    bootError.hidden = false;
    setTimeout(boot, 2000);
    return;
  }
  const config = await reply.json();
  bootError.hidden = true;
  gate.hidden = true;
  app.hidden = false;
  document.getElementById("sign-out").hidden = !token();
  if (panels === null) {
    const unauthorized = () => showGate("The token was refused; enter it again.");
    const timeline = new Timeline({ config, onUnauthorized: unauthorized });
    const tasks = new TaskList({ onOpen: (id) => timeline.open(id), onUnauthorized: unauthorized });
    const health = new Health({ config });
    const chat = new Chat({
      onTask: () => {
        tasks.refresh();
        // "in flight" counts the new task now, not at the next 5 s tick.
        health.refresh();
      },
      onDone: () => {
        tasks.refresh();
        health.refresh();
        // The server counts a task out of "in flight" just after its last
        // event: look again in a moment rather than at the next 5 s tick.
        setTimeout(() => health.refresh(), 1000);
      },
      onUnauthorized: unauthorized,
    });
    panels = { tasks, health, timeline, chat };
    watchConnection(panels);
    // Before the first message: the conversation this tab had before a reload.
    chat.restore();
  }
  panels.tasks.start();
  panels.health.start();
  try {
    const card = await (await get(".well-known/agent-card.json")).json();
    document.getElementById("agent-name").textContent = card.name || "";
  } catch {
    // The card only names the agent in the header.
  }
  document.getElementById("prompt").focus();
}

// A banner while the server does not answer; when it is back, everything is
// read again (the chat follows its task by itself).
function watchConnection({ tasks, health, timeline }) {
  const banner = document.getElementById("offline");
  connection.addEventListener("offline", (event) => {
    if (!gate.hidden) return;
    banner.textContent = `The server is not answering (since ${event.detail.since.toLocaleTimeString()}): `
      + "what you see is what it last said. Retrying…";
    banner.hidden = false;
    health.refresh(); // its badges say "unreachable" rather than the last "ready"
  });
  connection.addEventListener("online", () => {
    banner.hidden = true;
    tasks.refresh();
    health.refresh();
    timeline.reopen();
  });
}

document.getElementById("gate-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("gate-token");
  setToken(input.value.trim());
  input.value = "";
  boot();
});

document.getElementById("sign-out").addEventListener("click", () => {
  clearToken();
  showGate();
});

boot();
