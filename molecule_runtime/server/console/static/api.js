// The runtime's own A2A 1.0 JSON-RPC endpoint, as any client uses it.
// The token lives in sessionStorage only: never in a URL, never logged.

const TOKEN_KEY = "molecule-console-token";
// The page is served at <base>/console/; the JSON-RPC endpoint is <base>/.
export const BASE = new URL("../", window.location.href);

export class Unauthorized extends Error {
  constructor() {
    super("unauthorized: the token was refused");
    this.name = "Unauthorized";
  }
}

export class RpcError extends Error {
  constructor(error) {
    super(`${error.message || "error"} (${error.code})`);
    this.name = "RpcError";
    this.code = error.code;
  }
}

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
export function setToken(value) { sessionStorage.setItem(TOKEN_KEY, value); }
export function clearToken() { sessionStorage.removeItem(TOKEN_KEY); }

function headers(extra = {}) {
  const result = { "A2A-Version": "1.0", "Content-Type": "application/json", ...extra };
  if (token()) result.Authorization = `Bearer ${token()}`;
  return result;
}

// Random ids also where crypto.randomUUID is missing (plain http on a LAN address).
export function newId() {
  if (window.crypto.randomUUID) return window.crypto.randomUUID();
  const bytes = window.crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

let nextRequestId = 1;

// Whether the server answers: every call says so, and the page listens
// ("connection" events on `connection`) to show that the server is gone and
// to pick up again when it is back.
export const connection = new EventTarget();
let offlineSince = null;

export function serverOffline() { return offlineSince; }

function reached() {
  if (offlineSince === null) return;
  const since = offlineSince;
  offlineSince = null;
  connection.dispatchEvent(new CustomEvent("online", { detail: { since } }));
}

function lost() {
  if (offlineSince !== null) return;
  offlineSince = new Date();
  connection.dispatchEvent(new CustomEvent("offline", { detail: { since: offlineSince } }));
}

// fetch, telling `connection` whether the server could be reached at all (any
// HTTP answer counts; a network error, an aborted request excepted, does not).
async function call(url, init) {
  let reply;
  try {
    reply = await fetch(url, init);
  } catch (error) {
    if (error.name !== "AbortError") lost();
    throw error;
  }
  reached();
  return reply;
}

// Whether `error` means the connection to the server broke (not an answer).
export function isNetworkError(error) {
  return error instanceof TypeError;
}

// Mark the server unreachable after a stream broke mid-way (fetch itself had
// succeeded, so `call` could not see it).
export function streamBroke() { lost(); }

function envelope(method, params) {
  return JSON.stringify({ jsonrpc: "2.0", id: nextRequestId++, method, params });
}

export async function rpc(method, params) {
  const reply = await call(BASE, { method: "POST", headers: headers(), body: envelope(method, params) });
  if (reply.status === 401) throw new Unauthorized();
  const body = await reply.json();
  if (body.error) throw new RpcError(body.error);
  return body.result;
}

// A streaming method: yields {id, result} per server-sent event, id being the
// event's offset in the task's event log (when the server gives one).
export async function* rpcStream(method, params, { signal, lastEventId } = {}) {
  const extra = { Accept: "text/event-stream" };
  if (lastEventId !== undefined) extra["Last-Event-ID"] = String(lastEventId);
  const reply = await call(BASE, {
    method: "POST", headers: headers(extra), body: envelope(method, params), signal,
  });
  if (reply.status === 401) throw new Unauthorized();
  const type = reply.headers.get("content-type") || "";
  if (!type.includes("text/event-stream")) {
    const body = await reply.json();
    if (body.error) throw new RpcError(body.error);
    yield { id: null, result: body.result };
    return;
  }
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (error) {
        if (error.name !== "AbortError" && isNetworkError(error)) streamBroke();
        throw error;
      }
      const { value, done } = chunk;
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const event = parseEvent(block);
        if (event === null) continue;
        if (event.payload.error) throw new RpcError(event.payload.error);
        yield { id: event.id, result: event.payload.result };
      }
    }
  } finally {
    // A reader that stops early (leaves its for-await) closes the connection:
    // a subscription would otherwise stay open on the server.
    reader.cancel().catch(() => {});
  }
}

function parseEvent(block) {
  let id = null;
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith("id:")) id = line.slice(3).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return null;
  return { id, payload: JSON.parse(data.join("\n")) };
}

// GET a console or health path relative to the server's base URL.
export async function get(path) {
  const reply = await call(new URL(path, BASE), { headers: headers() });
  if (reply.status === 401) throw new Unauthorized();
  return reply;
}
