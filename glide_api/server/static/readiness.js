// Whether the models are ready: /readyz polled, and the banner that says why not (loading, the
// missing files and the command that fetches them).

import { apiFetch, sleep } from "./api.js";

const $ = (id) => document.getElementById(id);
const POLL_WAITING_MS = 2000;  // the banner promises "every 2 seconds"
const POLL_READY_MS = 30000;

function showReadiness(ready, info) {
  $("ready-banner").hidden = ready;
  if (ready) return;
  const loading = info?.loading;
  const stuck = Boolean(info?.failed) || loading?.stage === "missing" || (info?.missing ?? []).length > 0;
  $("ready-title").textContent = stuck ? "The models cannot be loaded."
    : loading ? `Loading the models${loading.stage ? ` (${loading.stage})` : ""}…`
      : "The models are not ready.";
  $("ready-reason").textContent = info?.reason ?? "";
  const progress = $("ready-progress");
  progress.hidden = !loading || stuck;
  if (loading && typeof loading.progress === "number") progress.value = loading.progress;
  else progress.removeAttribute("value");
  const missing = Array.isArray(info?.missing) ? info.missing : [];
  $("ready-missing").hidden = missing.length === 0;
  $("ready-missing-list").replaceChildren(...missing.map((file) => {
    const li = document.createElement("li");
    const code = document.createElement("code");
    code.textContent = file;
    li.append(code);
    return li;
  }));
  $("ready-command-line").hidden = !info?.command;
  $("ready-command").textContent = info?.command ?? "";
}

async function checkReadiness() {
  try {
    const response = await apiFetch("/readyz", { accept: [503, 404] });
    if (response.status === 404) return { ready: true, info: null };  // a server without the probe
    const body = await response.json().catch(() => ({}));
    return { ready: response.ok && body.ready !== false, info: body };
  } catch (error) {
    return { ready: false, info: { reason: error.message } };
  }
}

/**
 * Poll /readyz for ever: every 2 s while not ready, every 30 s after, keeping the banner up to date.
 * Awaits onChange(ready, first) on the first answer and whenever readiness changes.
 */
export async function watchReadiness(onChange) {
  let previous = false;
  for (let first = true; ; first = false) {
    const { ready, info } = await checkReadiness();
    const changed = ready !== previous;
    previous = ready;
    showReadiness(ready, info);
    if (changed || first) await onChange(ready, first);
    await sleep(ready ? POLL_READY_MS : POLL_WAITING_MS);
  }
}
