// The web UI's entry point: builds the views (generate, inpaint and image-to-image forms, mask
// editor, picture chooser, gallery, models and settings) and wires them to each other, to the
// server's settings and to readiness.

import { apiFetch, getJSON, onKeyNeeded } from "./api.js";
import { bytes } from "./format.js";
import { JobForm } from "./forms.js";
import { Gallery } from "./gallery.js";
import { askForKey } from "./keys.js";
import { MaskEditor } from "./mask.js";
import { PicturePicker } from "./picture.js";
import { announce, toast } from "./messages.js";
import { showActiveModel, showModels } from "./models.js";
import { watchReadiness } from "./readiness.js";
import { initStepForms, showSettings } from "./settings-view.js";
import { initTabs } from "./tabs.js";

const $ = (id) => document.getElementById(id);
const state = { ready: false, settings: null, models: null };

function main() {
  onKeyNeeded(askForKey);
  const selectTab = initTabs();
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

  /** `blobs` within the server's upload limit, else an error naming the picture. */
  function checkUpload(...blobs) {
    const size = blobs.reduce((total, blob) => total + blob.size, 0);
    const limit = state.settings?.limits?.max_upload_bytes;
    if (limit && size > limit) {
      const error = new Error(`The picture is too large to send (${bytes(size)}; the limit is `
        + `${bytes(limit)}). Try a smaller one.`);
      error.param = "image";
      throw error;
    }
  }

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
      checkUpload(image, mask);
      const body = new FormData();
      body.append("image", image, "image.png");
      body.append("mask", mask, "mask.png");
      for (const [name, value] of Object.entries(values)) body.append(name, String(value));
      return apiFetch("/v1/inpaint", { method: "POST", body, signal, headers: { Prefer: "respond-async" } });
    },
  });

  const picker = new PicturePicker({
    prefix: "i2i",
    onChange: () => img2img.clearError("image"),
    onError: (message) => img2img.fieldError("image", message),
  });
  const img2img = new JobForm({
    prefix: "i2i", task: "img2img", gallery, toast, canRun,
    extraCheck: (problems) => {
      if (!picker.file) problems.push(["image", "Choose a picture first."]);
    },
    send: async (values, signal) => {
      checkUpload(picker.file);
      const body = new FormData();
      body.append("image", picker.file, picker.file.name || "image.png");
      for (const [name, value] of Object.entries(values)) body.append(name, String(value));
      return apiFetch("/v1/img2img", { method: "POST", body, signal, headers: { Prefer: "respond-async" } });
    },
  });
  const forms = [generate, inpaint, img2img];
  const TAB_OF = { text2im: ["generate", generate], inpaint: ["inpaint", inpaint], img2img: ["img2img", img2img] };

  function reuse(job, seed) {
    const [tab, form] = TAB_OF[job.task] ?? TAB_OF.text2im;
    form.fill(job, seed);
    selectTab(tab);
    form.control("prompt").focus();
    announce(seed === null ? "Settings copied into the form."
      : `Settings and seed ${seed} copied into the form.`);
  }

  async function reloadSettings() {
    const settings = await getJSON("/v1/settings");
    state.settings = settings;
    for (const form of forms) form.applySettings(settings);
    $("inp-unavailable").hidden = inpaint.available;
    showSettings(settings);
  }

  async function reloadModels() {
    state.models = await getJSON("/v1/models");
    showModels(state.models);
  }

  async function refresh() {
    const results = await Promise.allSettled([reloadSettings(), reloadModels()]);
    showActiveModel(state.models, state.settings);
    const failed = results.find((r) => r.status === "rejected");
    // While the models load, the banner already says why nothing is available.
    if (failed && state.ready) toast(`Could not load the server's settings: ${failed.reason.message}`);
  }

  $("models-refresh").addEventListener("click", refresh);
  $("key-button").addEventListener("click", async () => {
    if (await askForKey("Enter the API key for this server (leave empty to keep the current one).")) {
      await refresh();
      announce("API key saved.");
    }
  });
  initStepForms({ getSettings: () => state.settings, reload: reloadSettings });

  document.addEventListener("keydown", (e) => {
    if ($("panel-inpaint").hidden || !(e.ctrlKey || e.metaKey) || e.key.toLowerCase() !== "z") return;
    if (e.target.closest?.("input, textarea, select")) return;
    e.preventDefault();
    editor.undo();
  });
  document.addEventListener("paste", (e) => {
    const file = [...(e.clipboardData?.files ?? [])].find((f) => f.type.startsWith("image/"));
    if (!file) return;
    if (!$("panel-inpaint").hidden) editor.load(file);
    else if (!$("panel-img2img").hidden) picker.load(file);
  });

  watchReadiness(async (ready, first) => {
    const wasReady = state.ready;
    state.ready = ready;
    if (ready || first) await refresh();  // sizes and defaults change as each capability loads
    forms.forEach((form) => form.updateButtons());
    document.body.dataset.ready = String(ready);
    if (ready && !wasReady && !first) {
      toast("The models are loaded: ready to generate.", { kind: "info", timeout: 6000 });
    }
  });
  gallery.restore();
}

main();
