// The official A2A JavaScript SDK (@a2a-js/sdk 1.x) driving a molecule-runtime server
// that runs tests/fixtures/submission_adapter.py (`ask x`, `slow n`, else `ok: text`).
//
//   node js_sdk_checks.mjs <base url> <binding: JSONRPC | HTTP+JSON> [<bearer token>] [<webhook url>]
//
// With a webhook URL it also registers a push config for a question's task (token
// "js-push-<binding>") and answers the question; the caller checks what the webhook got.
// Prints one JSON object: {"checks": {name: "ok" | "<what went wrong>"}}. Run with
// NODE_PATH pointing at the node_modules that hold @a2a-js/sdk.
import { createRequire } from "node:module";
import { randomUUID } from "node:crypto";

const require = createRequire(process.env.NODE_PATH + "/");
const sdk = require("@a2a-js/sdk");
const { ClientFactory, ClientFactoryOptions, JsonRpcTransportFactory, RestTransportFactory } =
  require("@a2a-js/sdk/client");

const [base, binding, token, webhook] = process.argv.slice(2);
const checks = {};

function authFetch(credential) {
  return (url, init = {}) => {
    const headers = new Headers(init.headers || {});
    if (credential) headers.set("Authorization", `Bearer ${credential}`);
    return fetch(url, { ...init, headers });
  };
}

async function clientFor(credential) {
  const fetchImpl = authFetch(credential);
  const options = ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
    transports: [new JsonRpcTransportFactory({ fetchImpl }), new RestTransportFactory({ fetchImpl })],
    preferredTransports: [binding],
  });
  return new ClientFactory(options).createFromUrl(base);
}

function request(text, extra = {}) {
  return sdk.SendMessageRequest.fromJSON({
    message: { messageId: randomUUID(), role: "ROLE_USER", parts: [{ text }], ...extra },
  });
}

const kind = (event) => event.payload?.$case;
const partText = (parts) =>
  parts.map((p) => (p.content?.$case === "text" ? p.content.value : "")).join("");
const taskText = (task) => task.artifacts.map((a) => partText(a.parts)).join("");

// The answer as a client following A2A holds it: a Task replaces it, artifact
// updates append to it (append=false replaces the artifact).
function streamedText(events) {
  const artifacts = new Map();
  for (const event of events) {
    if (kind(event) === "task") {
      artifacts.clear();
      for (const a of event.payload.value.artifacts) artifacts.set(a.artifactId, partText(a.parts));
    } else if (kind(event) === "artifactUpdate") {
      const update = event.payload.value;
      const id = update.artifact.artifactId;
      const chunk = partText(update.artifact.parts);
      artifacts.set(id, update.append ? (artifacts.get(id) ?? "") + chunk : chunk);
    }
  }
  return [...artifacts.values()].join("");
}

function lastState(events) {
  const last = events[events.length - 1];
  if (kind(last) === "task") return last.payload.value.status.state;
  if (kind(last) === "statusUpdate") return last.payload.value.status.state;
  return undefined;
}

async function collect(iterable) {
  const events = [];
  for await (const event of iterable) events.push(event);
  return events;
}

// JS_CHECKS=a,b runs only those checks (to look at one by hand).
const only = process.env.JS_CHECKS ? new Set(process.env.JS_CHECKS.split(",")) : null;

async function check(name, body) {
  if (only && !only.has(name)) return;
  try {
    const problem = await body();
    checks[name] = problem ? String(problem) : "ok";
  } catch (error) {
    checks[name] = `${error?.name}: ${error?.message}`.slice(0, 500);
  }
}

const { TaskState } = sdk;
const client = await clientFor(token);

await check("card", async () => {
  const card = await client.getAgentCard();
  if (!card.supportedInterfaces.some((i) => i.protocolBinding === binding)) return "binding not in card";
  if (token) {
    const scheme = card.securitySchemes?.bearer?.scheme;
    // Typed (proto) card: the scheme is a oneof, not the 0.3 string "Bearer".
    if (scheme?.$case !== "httpAuthSecurityScheme") return `untyped security scheme: ${JSON.stringify(scheme)}`;
  }
});

let sentTask;
await check("send", async () => {
  const result = await client.sendMessage(request("hello js"));
  if (!result.status) return `not a task: ${JSON.stringify(result)}`;
  sentTask = result;
  if (result.status.state !== TaskState.TASK_STATE_COMPLETED) return `state ${result.status.state}`;
  if (taskText(result) !== "ok: hello js") return `text ${JSON.stringify(taskText(result))}`;
});

await check("stream", async () => {
  const events = await collect(client.sendMessageStream(request("slow 5")));
  if (kind(events[0]) !== "task") return `first event ${kind(events[0])}`;
  if (lastState(events) !== TaskState.TASK_STATE_COMPLETED) return `last state ${lastState(events)}`;
  const text = streamedText(events);
  if (text !== "s0 s1 s2 s3 s4 ") return `text ${JSON.stringify(text)}`;
});

await check("get", async () => {
  const task = await client.getTask(sdk.GetTaskRequest.fromJSON({ id: sentTask.id }));
  if (task.id !== sentTask.id || taskText(task) !== "ok: hello js") return "wrong task";
});

await check("list", async () => {
  const page = await client.listTasks(sdk.ListTasksRequest.fromJSON({ contextId: sentTask.contextId }));
  if (!page.tasks.some((t) => t.id === sentTask.id)) return "sent task not listed";
});

await check("cancel", async () => {
  const stream = client.sendMessageStream(request("slow 100"));
  const first = (await stream.next()).value;
  const id = first.payload.value.id ?? first.payload.value.taskId;
  const canceled = await client.cancelTask(sdk.CancelTaskRequest.fromJSON({ id }));
  const rest = await collect(stream);
  if (canceled.status.state !== TaskState.TASK_STATE_CANCELED) return `cancel answered ${canceled.status.state}`;
  if (lastState(rest) !== TaskState.TASK_STATE_CANCELED) return `stream ended ${lastState(rest)}`;
});

await check("subscribe", async () => {
  const stream = client.sendMessageStream(request("slow 15"));
  const first = (await stream.next()).value;
  const id = first.payload.value.id;
  await stream.return(); // the client goes away mid-answer
  const events = await collect(client.resubscribeTask(sdk.SubscribeToTaskRequest.fromJSON({ id })));
  if (kind(events[0]) !== "task") return `first event ${kind(events[0])}`;
  if (lastState(events) !== TaskState.TASK_STATE_COMPLETED) return `last state ${lastState(events)}`;
  const expected = Array.from({ length: 15 }, (_, i) => `s${i} `).join("");
  if (streamedText(events) !== expected) return `text ${JSON.stringify(streamedText(events))}`;
  // Last-Event-ID: 0 replays the whole log of the finished task.
  const replay = await collect(
    client.resubscribeTask(sdk.SubscribeToTaskRequest.fromJSON({ id }), {
      serviceParameters: { "Last-Event-ID": "0" },
    }),
  );
  if (streamedText(replay) !== expected) return `replay ${JSON.stringify(streamedText(replay))}`;
  if (lastState(replay) !== TaskState.TASK_STATE_COMPLETED) return `replay ended ${lastState(replay)}`;
});

await check("multi-turn", async () => {
  const asked = await collect(client.sendMessageStream(request("ask js")));
  if (lastState(asked) !== TaskState.TASK_STATE_INPUT_REQUIRED) return `asked ${lastState(asked)}`;
  const task = asked[0].payload.value;
  const answer = await collect(client.sendMessageStream(request("bye", { taskId: task.id })));
  if (kind(answer[0]) !== "task") return `answer stream begins with ${kind(answer[0])}`;
  if (answer[0].payload.value.id !== task.id) return "answer stream of another task";
  if (lastState(answer) !== TaskState.TASK_STATE_COMPLETED) return `answer ended ${lastState(answer)}`;
  const done = await client.getTask(sdk.GetTaskRequest.fromJSON({ id: task.id }));
  if (taskText(done) !== "asked jsok: bye") return `text ${JSON.stringify(taskText(done))}`;
});

await check("files-and-data", async () => {
  const result = await client.sendMessage(
    sdk.SendMessageRequest.fromJSON({
      message: {
        messageId: randomUUID(),
        role: "ROLE_USER",
        parts: [
          { text: "with parts" },
          { data: { answer: 42 } },
          { raw: Buffer.from("hello file").toString("base64"), filename: "a.txt", mediaType: "text/plain" },
        ],
      },
    }),
  );
  if (result.status?.state !== TaskState.TASK_STATE_COMPLETED) return `state ${result.status?.state}`;
  const stored = await client.getTask(sdk.GetTaskRequest.fromJSON({ id: result.id }));
  const sent = stored.history.find((m) => m.role === sdk.Role.ROLE_USER);
  const cases = sent.parts.map((p) => p.content?.$case);
  if (cases.join(",") !== "text,data,raw") return `stored parts ${cases}`;
  if (sent.parts[1].content.value.answer !== 42) return "data part changed";
  if (Buffer.from(sent.parts[2].content.value).toString() !== "hello file") return "file part changed";
});

if (webhook) {
  await check("push", async () => {
    const asked = await client.sendMessage(request("ask push"));
    if (asked.status?.state !== TaskState.TASK_STATE_INPUT_REQUIRED) return `asked ${asked.status?.state}`;
    const config = sdk.TaskPushNotificationConfig.fromJSON({
      taskId: asked.id,
      id: "js-push",
      url: webhook,
      token: `js-push-${binding}`,
    });
    const created = await client.createTaskPushNotificationConfig(config);
    if (created.url !== webhook || created.taskId !== asked.id) return `created ${JSON.stringify(created)}`;
    const got = await client.getTaskPushNotificationConfig(
      sdk.GetTaskPushNotificationConfigRequest.fromJSON({ taskId: asked.id, id: "js-push" }),
    );
    if (got.url !== webhook) return `got ${JSON.stringify(got)}`;
    const listed = await client.listTaskPushNotificationConfig(
      sdk.ListTaskPushNotificationConfigsRequest.fromJSON({ taskId: asked.id }),
    );
    if (!listed.configs.some((c) => c.id === "js-push")) return "config not listed";
    const done = await client.sendMessage(request("bye", { taskId: asked.id }));
    if (done.status?.state !== TaskState.TASK_STATE_COMPLETED) return `answer ${done.status?.state}`;
    console.error(`push-task ${asked.id}`);
  });
}

if (token) {
  await check("auth-refused", async () => {
    const wrong = await clientFor("not-the-token");
    for (const call of [
      () => wrong.sendMessage(request("hi")),
      () => collect(wrong.sendMessageStream(request("hi"))),
    ]) {
      try {
        await call();
        return "a wrong token was accepted";
      } catch (error) {
        const text = `${error?.message} ${JSON.stringify(error?.errorResponse ?? "")}`;
        if (!/401|Unauthenticated|UNAUTHENTICATED/.test(text)) return `refusal without the 401: ${text}`;
      }
    }
  });
}

console.log(JSON.stringify({ checks }));
