// Small helpers shared by the panels. Text from tasks is only ever set as
// textContent, never parsed as HTML.

export const META = {
  mode: "molecule.mode",
  usage: "molecule.usage",
  created: "molecule.created",
  attempt: "molecule.attempt",
  kind: "molecule.kind",
};

export const TERMINAL = new Set([
  "TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED",
]);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data")) node.setAttribute(key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

export function stateName(state) {
  return (state || "").replace("TASK_STATE_", "").toLowerCase().replace("_", "-") || "?";
}

export function stateBadge(state) {
  const name = stateName(state);
  return el("span", { class: `state state-${name}`, text: name, dataState: name });
}

export function partsText(parts) {
  return (parts || []).map((p) => (p.text !== undefined ? p.text : describePart(p))).join("");
}

function describePart(part) {
  if (part.data !== undefined) return JSON.stringify(part.data);
  if (part.url) return `[file ${part.filename || part.url}]`;
  if (part.raw) return `[file ${part.filename || ""} ${part.mediaType || ""}]`;
  return "";
}

// Whether an artifact update carries nothing to show (e.g. an empty text that
// only marks the answer's last chunk).
export function isEmptyChunk(parts) {
  return (parts || []).every((p) => p.text === "");
}

// A file part as a link: bytes (`raw`, base64) become a download of a blob
// with the file's name and type; a `url` opens in a new tab (http(s) only, so
// a task cannot plant a script URL on the page).
export function fileLink(part) {
  const name = part.filename || "file";
  const label = `${name}${part.mediaType ? ` (${part.mediaType})` : ""}`;
  if (part.raw !== undefined) {
    const binary = atob(part.raw);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    const blob = new Blob([bytes], { type: part.mediaType || "application/octet-stream" });
    return el("a", {
      class: "file-link", href: URL.createObjectURL(blob), download: name, dataTestid: "file-link",
      text: `\u2913 ${label}`, title: `Download ${name} (${bytes.length} bytes)`,
    });
  }
  let url = null;
  try {
    url = new URL(part.url);
  } catch {
    // Not a URL at all: shown as text below.
  }
  if (url && (url.protocol === "https:" || url.protocol === "http:")) {
    return el("a", {
      class: "file-link", href: url.href, target: "_blank", rel: "noopener noreferrer",
      dataTestid: "file-link", text: `\u2197 ${label}`, title: url.href,
    });
  }
  return el("span", { class: "file-link", text: `${label}: ${part.url || ""}` });
}

// An artifact's parts as nodes: text as text, files as links, data as JSON.
export function partNodes(parts) {
  const nodes = [];
  let text = "";
  const flush = () => {
    if (text) nodes.push(el("pre", { class: "part-text", text }));
    text = "";
  };
  for (const part of parts || []) {
    if (part.text !== undefined) {
      text += part.text;
    } else if (part.raw !== undefined || part.url) {
      flush();
      nodes.push(el("div", {}, fileLink(part)));
    } else if (part.data !== undefined) {
      flush();
      nodes.push(el("pre", { class: "part-data", text: JSON.stringify(part.data, null, 2) }));
    }
  }
  flush();
  return nodes;
}

export function shortId(id) { return id ? id.slice(0, 8) : ""; }

export function seconds(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 90) return `${value.toFixed(1)} s`;
  if (value < 5400) return `${Math.round(value / 60)} min`;
  if (value < 172800) return `${Math.round(value / 3600)} h`;
  return `${Math.round(value / 86400)} d`;
}

export function when(timestamp) {
  const t = Date.parse(timestamp || "");
  return Number.isNaN(t) ? null : t;
}

// "12 in / 30 out tokens, $0.0012" for a stored `molecule.usage` value.
export function usageText(usage) {
  if (!usage) return "";
  const parts = [`${usage.input_tokens ?? 0} in / ${usage.output_tokens ?? 0} out tokens`];
  if (usage.cost !== undefined) parts.push(`cost ${Number(usage.cost).toPrecision(3)}`);
  const models = [...new Set((usage.attempts || []).map((a) => a.model).filter(Boolean))];
  if (models.length) parts.push(models.join(", "));
  return parts.join(" · ");
}

export function usageOf(metadata) { return (metadata || {})[META.usage] || null; }
