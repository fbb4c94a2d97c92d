// The web UI's entry point: tabs, the readiness banner, the API-key dialog, toasts, the models and
// settings view, and the wiring of the generate form, the inpaint form and the gallery.

import { apiFetch, getJSON, getKey, onKeyNeeded, setKey, sleep } from "./api.js";
import { JobForm } from "./forms.js";
import { Gallery } from "./gallery.js";
import { normalizeJob } from "./jobs.js";
import { MaskEditor } from "./mask.js";

const $ = (id) => document.getElementById(id);
const state = { ready: false, settings: null, models: null };

// ---- messages -----------------------------------------------------------------------------------

function toast(message, { kind = "error", timeout = 12000 } = {}) {
  const box = $("toasts");
  const item = document.createElement("div");
  item.className = `toast ${kind}`;
  const text = document.createElement("p");
  text.textContent = message;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "small quiet";
  close.textContent = "✕";
  close.setAttribute("aria-label", "Dismiss this message");
  close.addEventListener("click", () => item.remove());
  item.append(text, close);
  box.append(item);
  while (box.children.length > 4) box.firstElementChild.remove();
  if (timeout) setTimeout(() => item.remove(), timeout);
}

function announce(message) {
  const region = $("announcer");
  region.textContent = "";
  requestAnimationFrame(() => { region.textContent = message; });
}

// ---- tabs ---------------------------------------------------------------------------------------

function initTabs() {
  const tabs = [...document.querySelectorAll('#tabs [role="tab"]')];
  const select = (tab, { focus = false } = {}) => {
    for (const other of tabs) {
      const on = other === tab;
      other.setAttribute("aria-selected", String(on));
      other.tabIndex = on ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !on;
    }
    $("gallery-section").hidden = tab.id === "tab-models";
    if (focus) tab.focus();
    history.replaceState(null, "", `#${tab.id.slice("tab-".length)}`);
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
      if (next === undefined) return;
      e.preventDefault();
      select(tabs[(next + tabs.length) % tabs.length], { focus: true });
    });
  });
  select(tabs.find((tab) => `#${tab.id.slice("tab-".length)}` === location.hash) ?? tabs[0]);
  return (name) => select($(`tab-${name}`));
}

// ---- the API key --------------------------------------------------------------------------------

function askForKey(message) {
  const dialog = $("key-dialog");
  const input = $("key-input");
  $("key-message").textContent = message || "This server asks for an API key.";
  input.value = getKey();
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const choice = dialog.returnValue;
      if (choice === "save" && input.value.trim()) {
        setKey(input.value.trim());
        resolve(true);
      } else {
        if (choice === "forget") setKey("");
        resolve(false);
      }
      input.value = "";
    }, { once: true });
    dialog.showModal();
    input.focus();
  });
}

// ---- readiness ----------------------------------------------------------------------------------

function showReadiness(ready, info) {
  $("ready-banner").hidden = ready;
  if (ready) return;
  const loading = info?.loading;
  const stuck = Boolean(info?.failed) || loading?.stage === "missing" || (info?.missing ?? []).length > 0;
  $("ready-title").textContent = stuck ? "The models cannot be loaded."
    : loading ? `Loading the models${loading.stage ? ` (${loading.stage})` : ""}…` : "The models are not ready.";
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

/** Poll /readyz: every 2 s while not ready, every 30 s after. Calls onChange(ready, first) on changes. */
async function watchReadiness(onChange) {
  for (let first = true; ; first = false) {
    const { ready, info } = await checkReadiness();
    const changed = ready !== state.ready;
    state.ready = ready;
    showReadiness(ready, info);
    if (changed || first) await onChange(ready, first);
    await sleep(ready ? 30000 : 2000);
  }
}

// ---- models and settings ------------------------------------------------------------------------

// What the form shows before the server can answer /v1/settings (its documented defaults).
const FALLBACK_SETTINGS = {
  defaults: { batch_size: 1, guidance_scale: 3.0, upsample_temp: 0.997, steps: "100", upsample_steps: "fast27",
    sampler: "ancestral", upsample_sampler: "ddim", eta: 0.0 },
  limits: {},
  sizes: { text2im: [], inpaint: [] },
  samplers: ["ancestral", "ddim"],
};

const ROLES = { base: "Base", upsample: "Upsampler", base_inpaint: "Base (inpainting)",
  upsample_inpaint: "Upsampler (inpainting)" };

function facts(list, entries) {
  list.replaceChildren();
  for (const [term, value] of entries) {
    if (value === null || value === undefined || value === "") continue;
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    list.append(dt, dd);
  }
}

const count = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : n);

function bytes(n) {
  if (typeof n !== "number") return n;
  return n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(1)} MiB` : `${Math.round(n / 1024)} KiB`;
}

async function loadModels() {
  const info = await getJSON("/v1/models");
  state.models = info;
  facts($("models-facts"), [["Ready", info.ready ? "yes" : "no"], ["Device", info.device],
    ["Precision", info.precision]]);
  const rows = Object.entries(info.models ?? {}).map(([role, model]) => {
    const tr = document.createElement("tr");
    const cells = [ROLES[role] ?? role, model.name ?? model.kind ?? "",
      model.image_size ? `${model.image_size} px` : "", count(model.parameters) ?? ""];
    cells.forEach((text, i) => {
      const cell = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) cell.scope = "row";
      if (i === 3) cell.className = "number";
      cell.textContent = String(text);
      tr.append(cell);
    });
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 4;
    td.textContent = "No models are loaded yet.";
    tr.append(td);
    rows.push(tr);
  }
  $("models-table").tBodies[0].replaceChildren(...rows);
}

// The line under the header: which models answer, what they make and what a job may ask for.
function showActiveModel() {
  const line = $("active-model");
  const models = state.models?.ready ? state.models.models ?? {} : {};
  const text2im = [models.base, models.upsample].filter(Boolean);
  if (!text2im.length) {
    line.hidden = true;
    return;
  }
  const name = document.createElement("strong");
  name.textContent = text2im.map((m) => m.name).join(" + ");
  const sizes = state.settings?.sizes?.text2im ?? [];
  const l = state.settings?.limits ?? {};
  const base = text2im[0];
  const facts = [sizes.length && `${sizes.join(", ")} px`,
    base.text_ctx && `reads the first ${base.text_ctx} ${base.tokenizer === "bytes" ? "bytes" : "tokens"} of a prompt`,
    l.max_prompt_chars && `prompts up to ${l.max_prompt_chars} characters`,
    l.max_batch_size && `up to ${l.max_batch_size} images per job`].filter(Boolean);
  const about = Object.values(models).map((m) => m.about).find(Boolean);
  if (base.example_prompt) $("gen-prompt").placeholder = base.example_prompt;  // what this model can draw
  line.replaceChildren("Model: ", name, ` · ${facts.join(" · ")}`, ...(about ? [document.createElement("br"), about] : []));
  line.hidden = false;
}

function showSettings(settings) {
  const d = settings.defaults ?? {};
  const l = settings.limits ?? {};
  facts($("defaults-facts"), [["Size", d.size && `${d.size} px`], ["Images", d.batch_size],
    ["Guidance scale", d.guidance_scale], ["Base steps", d.steps], ["Upsampler steps", d.upsample_steps],
    ["Base sampler", d.sampler], ["Upsampler sampler", d.upsample_sampler], ["Eta", d.eta],
    ["Upsample temperature", d.upsample_temp],
    ["Sizes", (settings.sizes?.text2im ?? []).join(", ") || "none"],
    ["Inpainting sizes", (settings.sizes?.inpaint ?? []).join(", ") || "none"],
    ["Samplers", (settings.samplers ?? []).join(", ")]]);
  facts($("limits-facts"), [["Images per job", l.max_batch_size], ["Prompt length", l.max_prompt_chars
    && `${l.max_prompt_chars} characters`], ["Upload size", bytes(l.max_upload_bytes)], ["Steps", l.max_steps
    && `1 to ${l.max_steps}`]]);
  for (const [name, value] of [["basemodel", d.steps], ["upmodel", d.upsample_steps]]) {
    $(`${name}-current`).textContent = value ? `Now: ${value}` : "";
    const input = $(`${name}-steps`);
    if (/^\d+$/.test(String(value)) && (!input.value || input.dataset.fromServer === "true")) {
      input.value = String(value);
      input.dataset.fromServer = "true";
    }
  }
}

function initStepForms(reload) {
  const forms = [["basemodel", "/basemodel", "base_model_total_parameters", "Base model"],
    ["upmodel", "/upmodel", "upsample_model_total_parameters", "Upsampler"]];
  for (const [name, route, field, label] of forms) {
    const form = $(`${name}-form`);
    const input = $(`${name}-steps`);
    const error = $(`${name}-steps-error`);
    const result = $(`${name}-result`);
    input.addEventListener("input", () => {
      input.dataset.fromServer = "false";
      error.hidden = true;
      input.removeAttribute("aria-invalid");
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const fail = (message) => {
        error.textContent = message;
        error.hidden = false;
        input.setAttribute("aria-invalid", "true");
        input.focus();
      };
      const steps = input.value.trim();
      const max = state.settings?.limits?.max_steps ?? 1000;
      if (!/^\d+$/.test(steps) || Number(steps) < 1 || Number(steps) > max) {
        fail(`Enter a whole number of steps, 1 to ${max}.`);
        return;
      }
      result.textContent = "Saving…";
      try {
        const response = await apiFetch(`${route}?diffusion_steps=${steps}`, { method: "POST" });
        const body = await response.json();
        result.textContent = `${label}: ${count(body[field])} parameters; later jobs use ${steps} steps.`;
        input.dataset.fromServer = "true";
        await reload();
      } catch (err) {
        result.textContent = "";
        fail(err.message);
      }
    });
  }
}

// ---- start --------------------------------------------------------------------------------------

function main() {
  onKeyNeeded(askForKey);
  const selectTab = initTabs();
  let forms = [];
  const canRun = () => state.ready;

  const gallery = new Gallery({
    list: $("gallery"),
    empty: $("gallery-empty"),
    clearButton: $("gallery-clear"),
    onError: (error) => toast(`Could not load an image: ${error.message}`),
    onReuse: (job) => reuse(job, null),
    onSameSeed: (job, image) => reuse(job, image.seed),
  });

  const editor = new MaskEditor({
    imageCanvas: $("inp-image-canvas"),
    maskCanvas: $("inp-mask-canvas"),
    stack: $("inp-stack"),
    dropZone: $("inp-drop"),
    dropHint: $("inp-drop-hint"),
    fileInput: $("inp-file"),
    tools: $("inp-tools"),
    brush: $("inp-brush"),
    brushValue: $("inp-brush-value"),
    info: $("inp-image-info"),
    onChange: () => inpaint.clearError("image"),
    onError: (message) => inpaint.fieldError("image", message),
  });
  $("inp-choose").addEventListener("click", () => $("inp-file").click());

  const generate = new JobForm({
    prefix: "gen", task: "text2im", gallery, toast, canRun,
    send: (values, signal) => apiFetch("/v1/generations", {
      method: "POST", json: values, signal, headers: { Prefer: "respond-async" } }),
  });

  const inpaint = new JobForm({
    prefix: "inp", task: "inpaint", gallery, toast, canRun,
    extraCheck: (problems) => {
      if (!editor.loaded) problems.push(["image", "Choose a picture first."]);
      else if (editor.paintedFraction() === 0) {
        problems.push(["image", "Paint the area to change first (or use Fill all)."]);
      }
    },
    send: async (values, signal) => {
      const [image, mask] = await Promise.all([editor.imageBlob(), editor.maskBlob()]);
      const limit = state.settings?.limits?.max_upload_bytes;
      if (limit && image.size + mask.size > limit) {
        const error = new Error(`The picture is too large to send (${bytes(image.size)}; the limit is `
          + `${bytes(limit)}). Try a smaller one.`);
        error.param = "image";
        throw error;
      }
      const body = new FormData();
      body.append("image", image, "image.png");
      body.append("mask", mask, "mask.png");
      for (const [name, value] of Object.entries(values)) body.append(name, String(value));
      return apiFetch("/v1/inpaint", { method: "POST", body, signal, headers: { Prefer: "respond-async" } });
    },
  });
  forms = [generate, inpaint];

  function reuse(job, seed) {
    const form = job.task === "inpaint" ? inpaint : generate;
    form.fill(job, seed);
    selectTab(job.task === "inpaint" ? "inpaint" : "generate");
    form.control("prompt").focus();
    announce(seed === null ? "Settings copied into the form." : `Settings and seed ${seed} copied into the form.`);
  }

  async function reloadSettings() {
    const settings = await getJSON("/v1/settings");
    state.settings = settings;
    for (const form of forms) form.applySettings(settings);
    $("inp-unavailable").hidden = inpaint.available;
    showSettings(settings);
  }

  async function refresh() {
    const results = await Promise.allSettled([reloadSettings(), loadModels()]);
    showActiveModel();
    const failed = results.find((r) => r.status === "rejected");
    if (!failed) return;
    if (!state.settings) {
      for (const form of forms) form.applySettings(FALLBACK_SETTINGS);  // until the server can say
    }
    // While the models load, the banner already says why nothing is available.
    if (state.ready) toast(`Could not load the server's settings: ${failed.reason.message}`);
  }

  $("models-refresh").addEventListener("click", refresh);
  $("key-button").addEventListener("click", async () => {
    if (await askForKey("Enter the API key for this server (leave empty to keep the current one).")) {
      await refresh();
      announce("API key saved.");
    }
  });
  initStepForms(reloadSettings);

  document.addEventListener("keydown", (e) => {
    if ($("panel-inpaint").hidden || !(e.ctrlKey || e.metaKey) || e.key.toLowerCase() !== "z") return;
    if (e.target.closest?.("input, textarea, select")) return;
    e.preventDefault();
    editor.undo();
  });
  document.addEventListener("paste", (e) => {
    if ($("panel-inpaint").hidden) return;
    const file = [...(e.clipboardData?.files ?? [])].find((f) => f.type.startsWith("image/"));
    if (file) editor.load(file);
  });

  async function restoreGallery() {
    for (const id of gallery.storedIds()) {
      try {
        const job = await getJSON(`/v1/jobs/${encodeURIComponent(id)}`);
        if (job.status === "succeeded") gallery.add(normalizeJob(job), { atEnd: true });
        else if (["failed", "cancelled"].includes(job.status)) gallery.forget(id);
      } catch (error) {
        if (error.status === 404) gallery.forget(id);  // evicted by the server
      }
    }
  }

  watchReadiness(async (ready, first) => {
    if (ready || first) await refresh();  // sizes and defaults may change once the models load
    forms.forEach((form) => form.updateButtons());
    document.body.dataset.ready = String(ready);
    if (ready && !first) toast("The models are loaded: ready to generate.", { kind: "info", timeout: 6000 });
  });
  restoreGallery();
}

main();
