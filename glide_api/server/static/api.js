// Talking to the server: every call carries the API key (when one is stored), errors become
// ApiError with the server's {"error": {message, type, param, code}} fields, and a 401 asks the
// user for a key (once, however many calls are waiting) and retries.
//
// Progress streams are read with fetch() and a stream reader rather than EventSource, because
// EventSource cannot send an Authorization header.

const KEY_STORAGE = "glide-api.key";

export class ApiError extends Error {
  constructor({ status = 0, message, type = null, param = null, code = null, retryAfter = null }) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type;
    this.param = param;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export function getKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";  // storage disabled: the key lives only as long as the dialog's answer
  }
}

export function setKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    // private mode or storage full: nothing to keep
  }
}

// askForKey(message) -> Promise<boolean>: whether the user gave a (new) key. Set by the app.
let askForKey = async () => false;
let pendingAsk = null;

export function onKeyNeeded(callback) {
  askForKey = callback;
}

function keyNeeded(message) {
  // One dialog for all the calls that got a 401 at the same time.
  if (!pendingAsk) {
    pendingAsk = Promise.resolve(askForKey(message)).finally(() => { pendingAsk = null; });
  }
  return pendingAsk;
}

async function errorFrom(response) {
  let message = `${response.status} ${response.statusText || "error"}`.trim();
  let type = null, param = null, code = null;
  const text = await response.text().catch(() => "");
  if (text) {
    try {
      const body = JSON.parse(text);
      const error = body && typeof body === "object" ? (body.error ?? body) : null;
      if (typeof error === "string") {
        message = error;
      } else if (error && typeof error === "object") {
        if (typeof error.message === "string") message = error.message;
        type = error.type ?? null;
        param = error.param ?? null;
        code = error.code ?? null;
      }
    } catch {
      if (text.length < 300 && !text.trimStart().startsWith("<")) message = text.trim();
    }
  }
  const header = response.headers.get("Retry-After");
  const retryAfter = header !== null && /^\d+$/.test(header.trim()) ? Number(header) : null;
  if (response.status === 429 && retryAfter !== null) {
    message = `${message} (try again in ${retryAfter} s)`;
  }
  return new ApiError({ status: response.status, message, type, param, code, retryAfter });
}

/**
 * fetch() with the key, JSON in and errors out.
 *   json: a value sent as a JSON body; body: any other body (FormData);
 *   accept: extra statuses returned instead of thrown (e.g. [503] for /readyz).
 * Throws ApiError (status 0 when the server cannot be reached) or the AbortError of `signal`.
 */
export async function apiFetch(path, { method = "GET", json, body, headers = {}, signal, accept = [] } = {}) {
  for (let attempt = 0; ; attempt++) {
    const h = new Headers(headers);
    if (!h.has("Accept")) h.set("Accept", "application/json");
    const key = getKey();
    if (key) h.set("Authorization", `Bearer ${key}`);
    let payload = body;
    if (json !== undefined) {
      h.set("Content-Type", "application/json");
      payload = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(path, { method, headers: h, body: payload, signal, cache: "no-store" });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError({ message: "Cannot reach the server. Is it running?", type: "network_error" });
    }
    if (response.status === 401 && attempt < 3) {
      const error = await errorFrom(response);
      if (await keyNeeded(error.message)) continue;
      throw error;
    }
    if (response.ok || accept.includes(response.status)) return response;
    throw await errorFrom(response);
  }
}

export async function getJSON(path, options = {}) {
  const response = await apiFetch(path, options);
  return response.json();
}

export async function postJSON(path, json, options = {}) {
  const response = await apiFetch(path, { ...options, method: "POST", json });
  return response.json();
}

/**
 * Server-sent events from a fetch() response: yields {event, id, data} per event, `data` parsed
 * as JSON when it is JSON. Comment lines (": keep-alive") and events without data are skipped.
 */
export async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "", id = null, data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      let text = buffer + value;
      // A "\r" at the end may be the first half of "\r\n": keep it for the next chunk.
      const held = text.endsWith("\r") ? "\r" : "";
      if (held) text = text.slice(0, -1);
      const lines = text.split(/\r\n|\r|\n/);
      buffer = lines.pop() + held;
      for (const line of lines) {
        if (line === "") {
          if (data.length) {
            const raw = data.join("\n");
            let parsed = raw;
            try { parsed = JSON.parse(raw); } catch { /* plain text data */ }
            yield { event: event || "message", id, data: parsed };
          }
          event = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let content = colon < 0 ? "" : line.slice(colon + 1);
        if (content.startsWith(" ")) content = content.slice(1);
        if (field === "event") event = content;
        else if (field === "data") data.push(content);
        else if (field === "id" && !content.includes("\0")) id = content;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason ?? new DOMException("aborted", "AbortError"));
    }, { once: true });
  });
}
