// Start-up: with auth on, nothing is shown (or fetched beyond /console/config,
// which answers 401) until the user enters a token that the server accepts.

import { clearToken, get, setToken, token } from "./api.js";
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
  document.getElementById("agent-name").textContent = "";
  gate.hidden = false;
  document.getElementById("gate-error").textContent = message;
  document.getElementById("gate-token").focus();
}

async function boot() {
  const bootError = document.getElementById("boot-error");
  bootError.hidden = true;
  let reply;
  try {
    reply = await get("console/config");
  } catch (error) {
    if (error.name === "Unauthorized") {
      showGate(token() ? "That token was refused." : "");
      if (token()) clearToken();
      return;
    }
    bootError.textContent = `The runtime did not answer: ${error.message}`;
    bootError.hidden = false;
    return;
  }
  const config = await reply.json();
  gate.hidden = true;
  app.hidden = false;
  document.getElementById("sign-out").hidden = !token();
  if (panels === null) {
    const unauthorized = () => showGate("The token was refused; enter it again.");
    const timeline = new Timeline({ config, onUnauthorized: unauthorized });
    const tasks = new TaskList({ onOpen: (id) => timeline.open(id), onUnauthorized: unauthorized });
    const health = new Health({ config });
    const chat = new Chat({
      onTask: () => tasks.refresh(),
      onDone: () => {
        tasks.refresh();
        health.refresh();
      },
      onUnauthorized: unauthorized,
    });
    panels = { tasks, health, timeline, chat };
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
