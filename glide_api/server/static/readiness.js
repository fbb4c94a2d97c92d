// Whether the models are ready: /readyz polled, and the banner that says, per capability
// (text-to-image, inpainting), what is not ready and why (loading, the missing files, the command
// that fetches them, and the demo that works offline).

import { apiFetch, sleep } from "./api.js";

const $ = (id) => document.getElementById(id);
const POLL_WAITING_MS = 2000;  // the banner promises "every 2 seconds"
const POLL_READY_MS = 30000;
export const CAPABILITY_LABELS = { text2im: "Text-to-image", inpaint: "Inpainting" };

// The capabilities that are on but not ready yet, as [task, status] pairs.
const pending = (info) => Object.entries(info?.capabilities ?? {})
  .filter(([, cap]) => cap.state !== "ready" && cap.state !== "off");

function showReadiness(ready, info) {
  const waiting = pending(info);
  const banner = $("ready-banner");
  banner.hidden = ready && waiting.length === 0;
  if (banner.hidden) return;
  const stuck = waiting.every(([, cap]) => cap.state !== "loading");
  const names = ready ? waiting.map(([task]) => CAPABILITY_LABELS[task] ?? task) : ["The models"];
  const verb = names.length === 1 && ready ? "is" : "are";
  $("ready-title").textContent = waiting.length === 0 ? "The models are not ready."
    : `${names.join(" and ")} ${stuck ? "cannot be loaded." : `${verb} loading…`}`;
  $("ready-reason").textContent = info?.reason ?? "";
  const progress = $("ready-progress");
  const loading = waiting.find(([, cap]) => cap.state === "loading")?.[1];
  progress.hidden = !loading;
  if (typeof loading?.progress === "number") progress.value = loading.progress;
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
  $("ready-advice").hidden = !info?.advice;
  $("ready-advice").textContent = info?.advice ? `Or, with no download: ${info.advice}.` : "";
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
 * Poll /readyz for ever: every 2 s while a capability is not ready, every 30 s after, keeping the
 * banner up to date. Awaits onChange(ready, first) on the first answer and whenever readiness, or
 * a capability's state, changes (the sizes a form offers change when inpainting becomes ready).
 */
export async function watchReadiness(onChange) {
  let previous = null;
  for (let first = true; ; first = false) {
    const { ready, info } = await checkReadiness();
    const states = JSON.stringify([ready, Object.values(info?.capabilities ?? {}).map((c) => c.state)]);
    const changed = states !== previous;
    previous = states;
    showReadiness(ready, info);
    if (changed || first) await onChange(ready, first);
    await sleep(ready && pending(info).length === 0 ? POLL_READY_MS : POLL_WAITING_MS);
  }
}
