// The generate, inpaint and image-to-image forms: defaults, ranges, choices, presets and help from
// /v1/settings, reading the controls into an API request, errors shown beside the field they name,
// and one job at a time per form, from submit through its progress events to the gallery.

import { apiFetch, getJSON } from "./api.js";
import { followJob, jobPath, normalizeJob, RunView, TERMINAL } from "./jobs.js";
import { sentence } from "./format.js";
import { applyRange, askFor, choicesOf, inRange, optionOf, optionsOf, rangeOf } from "./options.js";

// The controls that take a default: [control name, its key in /v1/settings defaults]. Samplers and
// size are filled with their choices first.
const DEFAULTED = [["n", "batch_size"], ["guidance_scale", "guidance_scale"], ["steps", "steps"],
  ["upsample_steps", "upsample_steps"], ["upsample_temp", "upsample_temp"], ["eta", "eta"],
  ["strength", "strength"], ["guidance_interval", "guidance_interval"]];
// The request's numeric fields, and those sent as the text they hold (when not empty).
const NUMBERS = ["size", "n", "seed", "guidance_scale", "eta", "upsample_temp", "strength"];
const TEXTS = ["steps", "upsample_steps", "guidance_interval", "negative_prompt", "preset"];

// Names the server (or the engine behind it) may give a parameter -> the form control's name.
const ALIASES = {
  batch_size: "n",
  base_respacing: "steps",
  upsample_respacing: "upsample_steps",
  base_sampler: "sampler",
  diffusion_steps: "steps",
  seeds: "seed",
  mask: "image",
  file: "image",
};

const title = (name) => name[0].toUpperCase() + name.slice(1);

function parameterName(error) {
  let param = error.param;
  if (!param) {
    // Domain errors read "name: rule (got …)"; take the name when it is one.
    const match = /^([a-z_]+):\s/.exec(error.message ?? "");
    param = match ? match[1] : null;
  }
  if (!param) return null;
  const last = String(param).split(/[.[\]]+/).filter(Boolean).pop() ?? "";
  return ALIASES[last] ?? last;
}

export class JobForm {
  /**
   * prefix: "gen", "inp" or "i2i" (element ids); task: "text2im", "inpaint" or "img2img";
   * send(values, signal) -> Promise<Response> posts the job; gallery receives finished jobs;
   * toast(message) shows errors that belong to no field; canRun() says whether the server is ready;
   * extraCheck(problems) may add [field, message] pairs before a job is sent.
   */
  constructor({ prefix, task, send, gallery, toast, canRun, extraCheck = () => {} }) {
    Object.assign(this, { prefix, task, send, gallery, toast, canRun, extraCheck });
    this.form = document.getElementById(`${prefix}-form`);
    this.submitButton = document.getElementById(`${prefix}-submit`);
    this.cancelButton = document.getElementById(`${prefix}-cancel`);
    this.formError = document.getElementById(`${prefix}-form-error`);
    this.run = new RunView(prefix);
    this.current = null;  // {id, controller} while a job is being sent or followed
    this.settings = null;
    this.available = false;  // until /v1/settings says which sizes this task offers

    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.start();
    });
    this.cancelButton.addEventListener("click", () => this.cancel());
    document.getElementById(`${prefix}-reset`).addEventListener("click", () => this.resetToDefaults());
    const prompt = this.control("prompt");
    prompt.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.ctrlKey && !e.altKey && !e.metaKey && !e.isComposing) {
        e.preventDefault();
        this.form.requestSubmit();
      }
    });
    const counter = this.form.querySelector(`[data-counter-for="${prefix}-prompt"]`);
    prompt.addEventListener("input", () => this.count(prompt, counter));
    for (const name of ["sampler", "upsample_sampler"]) {
      this.control(name)?.addEventListener("change", () => this.updateEta());
    }
    this.form.addEventListener("input", (e) => this.clearError(e.target.name));
    this.updateButtons();
  }

  control(name) {
    return this.form.elements.namedItem(name);
  }

  count(prompt, counter) {
    const max = this.settings?.limits?.max_prompt_chars;
    if (counter && max) counter.textContent = `${prompt.value.length} / ${max} characters`;
  }

  // ---- settings and defaults -----------------------------------------------------------------

  /**
   * Choices, ranges, help, limits and defaults from /v1/settings. A control the user changed keeps its
   * value.
   */
  applySettings(settings) {
    this.settings = settings;
    const defaults = settings.defaults ?? {};
    const limits = settings.limits ?? {};
    const sizes = settings.sizes?.[this.task] ?? [];
    this.available = sizes.length > 0;

    const size = this.control("size");
    const chosen = size.value;
    size.replaceChildren(...sizes.map((s) => new Option(`${s} × ${s}`, String(s))));
    const defaultSize = sizes.includes(defaults.size) ? defaults.size : sizes[sizes.length - 1];
    if (defaultSize !== undefined) this.setDefault(size, defaultSize, chosen);

    for (const name of ["sampler", "upsample_sampler"]) {
      const select = this.control(name);
      if (!select) continue;
      const current = select.value;
      select.replaceChildren(...choicesOf(settings, name).map((s) => new Option(s, s)));
      if (defaults[name] !== undefined) this.setDefault(select, defaults[name], current);
    }
    for (const [name, key] of DEFAULTED) {
      const control = this.control(name);
      if (control && defaults[key] !== undefined) this.setDefault(control, defaults[key]);
    }
    for (const option of optionsOf(settings)) {
      const control = this.control(option.control);
      if (!control) continue;
      if (control.type === "number") applyRange(control, rangeOf(settings, option.control));
      // The help is written once, in the server's option table: a field's hint, else its tooltip.
      const hint = document.getElementById(`${this.prefix}-${option.control}-hint`);
      if (hint) hint.textContent = sentence(option.help);
      else control.title = option.help;
    }
    if (limits.max_prompt_chars) this.control("prompt").maxLength = limits.max_prompt_chars;
    this.count(this.control("prompt"), this.form.querySelector("[data-counter-for]"));
    this.showPresets(settings.presets ?? []);
    this.updateEta();
    this.updateButtons();
  }

  /** One button per preset: a click puts its values into the form and sends its name along. */
  showPresets(presets) {
    const group = this.form.querySelector("[data-presets]");
    group.replaceChildren(...presets.map((preset) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "small";
      button.dataset.preset = preset.name;
      button.textContent = title(preset.name);
      button.title = preset.help;
      button.setAttribute("aria-pressed", String(this.control("preset").value === preset.name));
      button.addEventListener("click", () => this.applyPreset(preset));
      return button;
    }));
  }

  applyPreset(preset) {
    for (const [name, value] of Object.entries(preset.values)) {
      const control = this.control(name);
      if (!control) continue;  // not in this form: the server applies it from `preset`
      if (control.tagName === "SELECT" && ![...control.options].some((o) => o.value === String(value))) continue;
      control.value = String(value);
      this.clearError(name);
    }
    this.markPreset(preset);
    this.updateEta();
  }

  /** Show which preset is chosen (null: none); its name goes with the request. */
  markPreset(preset) {
    this.control("preset").value = preset?.name ?? "";
    for (const button of this.form.querySelectorAll("[data-preset]")) {
      button.setAttribute("aria-pressed", String(button.dataset.preset === preset?.name));
    }
    document.getElementById(`${this.prefix}-preset-chosen`).textContent = preset
      ? `${title(preset.name)}: ${sentence(preset.help)} Fields you change win over it.` : "";
  }

  setDefault(control, value, current = control.value) {
    const text = String(value);
    const previous = control.dataset.default;
    control.dataset.default = text;
    const offered = control.tagName !== "SELECT" || [...control.options].some((o) => o.value === current);
    const untouched = previous === undefined || current === previous || current === "";
    control.value = untouched || !offered ? text : current;
  }

  resetToDefaults() {
    for (const control of this.form.elements) {
      if (control.dataset?.default !== undefined) control.value = control.dataset.default;
    }
    this.control("seed").value = "";
    this.control("negative_prompt").value = "";
    this.markPreset(null);
    this.updateEta();
    this.clearErrors();
  }

  updateEta() {
    const eta = this.control("eta");
    if (!eta) return;
    const ddim = ["sampler", "upsample_sampler"].some((name) => this.control(name).value === "ddim");
    eta.disabled = !ddim;
  }

  /** Fill the form from a gallery job; with `seed`, that one image again. */
  fill(job, seed = null) {
    const set = (name, value) => {
      const control = this.control(name);
      if (!control || value === null || value === undefined) return;
      if (control.tagName === "SELECT" && ![...control.options].some((o) => o.value === String(value))) return;
      control.value = String(value);
    };
    set("prompt", job.prompt);
    set("size", job.size);
    set("n", seed === null ? job.batchSize : 1);
    this.control("seed").value = seed === null ? "" : String(seed);
    set("guidance_scale", job.guidanceScale);
    set("steps", job.steps);
    set("upsample_steps", job.upsampleSteps);
    set("sampler", job.sampler);
    set("upsample_sampler", job.upsampleSampler);
    set("eta", job.eta);
    set("upsample_temp", job.upsampleTemp);
    set("negative_prompt", job.negativePrompt);
    set("guidance_interval", job.guidanceInterval?.join(","));
    set("strength", job.strength);
    this.markPreset(null);  // the job's own values are all in the form now
    this.updateEta();
    this.clearErrors();
    this.control("prompt").dispatchEvent(new Event("input"));
  }

  // ---- reading the form ----------------------------------------------------------------------

  /** The request fields, or null after showing what is wrong. Empty optional fields are left out. */
  values() {
    this.clearErrors();
    const problems = [];
    const out = {};
    const prompt = this.control("prompt").value.trim();
    const maxChars = this.settings?.limits?.max_prompt_chars;
    if (!prompt) problems.push(["prompt", "Write a prompt first."]);
    else if (maxChars && prompt.length > maxChars) problems.push(["prompt", `At most ${maxChars} characters.`]);
    out.prompt = prompt;

    const number = (name) => {
      const control = this.control(name);
      if (!control || control.disabled || control.value.trim() === "") return;
      const value = Number(control.value);
      const integer = optionOf(this.settings, name)?.type === "int";
      const range = rangeOf(this.settings, name);
      if (!Number.isFinite(value) || (integer && !Number.isInteger(value)) || !inRange(value, range)) {
        problems.push([name, askFor(integer ? "a whole number" : "a number", range)]);
        return;
      }
      out[name] = value;
    };
    for (const name of NUMBERS) number(name);
    for (const name of TEXTS) {
      const value = this.control(name)?.value.trim();
      if (value) out[name] = value;
    }
    for (const name of ["sampler", "upsample_sampler"]) {
      const control = this.control(name);
      if (control?.value) out[name] = control.value;
    }
    this.extraCheck(problems);
    problems.forEach(([name, message]) => this.fieldError(name, message));
    if (problems.length) this.focusControl(problems[0][0]);
    return problems.length ? null : out;
  }

  // ---- errors --------------------------------------------------------------------------------

  hasImage(name) {
    return name === "image" && this.task !== "text2im";  // the picture (and mask) live outside the form
  }

  errorElement(name) {
    return document.getElementById(`${this.prefix}-${name}-error`)
      ?? (this.hasImage(name) ? document.getElementById(`${this.prefix}-file-error`) : null);
  }

  fieldError(name, message) {
    const element = this.errorElement(name);
    if (!element) return false;
    element.textContent = message;
    element.hidden = false;
    this.control(name)?.setAttribute("aria-invalid", "true");
    return true;
  }

  focusControl(name) {
    const picker = this.task === "inpaint" ? '#inp-drop-hint:not([hidden]) button, [data-mask="replace"]'
      : `#${this.prefix}-drop-hint:not([hidden]) button, #${this.prefix}-replace:not([hidden])`;
    const control = this.control(name) ?? (this.hasImage(name) ? document.querySelector(picker) : null);
    if (control && !control.disabled) control.focus();
  }

  clearError(name) {
    if (!name) return;
    const element = this.errorElement(name);
    if (element) {
      element.hidden = true;
      element.textContent = "";
    }
    this.control(name)?.removeAttribute("aria-invalid");
  }

  clearErrors() {
    for (const element of this.form.querySelectorAll(".field-error")) this.clearError(
      element.id.slice(this.prefix.length + 1, -"-error".length));
    this.clearError("image");
    this.formError.hidden = true;
  }

  showError(error) {
    const name = parameterName(error);
    if (name && this.fieldError(name, error.message)) {
      this.focusControl(name);
      return;
    }
    this.formError.textContent = error.message;
    this.formError.hidden = false;
    this.toast(error.message);
  }

  // ---- running a job -------------------------------------------------------------------------

  updateButtons({ runEnded = false } = {}) {
    const running = this.current !== null;
    const hadFocus = document.activeElement;
    this.submitButton.disabled = running || !this.canRun() || !this.available;
    this.cancelButton.hidden = !running;
    this.cancelButton.disabled = false;
    // Keep keyboard users where they were: Generate -> Cancel while running, and back after.
    if (running && hadFocus === this.submitButton) this.cancelButton.focus();
    if (runEnded && (hadFocus === this.cancelButton || hadFocus === document.body)) this.submitButton.focus();
  }

  async start() {
    if (this.current) return;
    if (!this.canRun()) {
      this.toast("The models are not ready yet; generating starts working once they are loaded.");
      return;
    }
    const values = this.values();
    if (!values) return;
    const controller = new AbortController();
    this.current = { id: null, controller };
    this.updateButtons();
    this.run.submitting();
    try {
      const response = await this.send(values, controller.signal);
      const job = await response.json();
      this.current.id = job.id;
      const final = TERMINAL.has(job.status)
        ? { type: job.status, job, message: job.error }
        : await followJob(job.id, { signal: controller.signal, onEvent: (e) => this.onEvent(e) });
      if (final.type === "succeeded") {
        const full = await getJSON(jobPath(job.id), { signal: controller.signal }).catch(() => final.job ?? job);
        const result = normalizeJob(full?.id ? full : { ...final.job, id: job.id });
        this.gallery.add(result);
        this.run.finished(final, result.images.length);
      } else {
        this.run.finished(final);
        if (final.type === "failed") this.toast(`The job failed: ${final.message || "no reason given"}`);
      }
    } catch (error) {
      if (error.name === "AbortError") {
        this.run.finished({ type: "cancelled" });
      } else {
        this.run.error(`Not done: ${error.message}`);
        this.showError(error);
      }
    } finally {
      this.current = null;
      this.updateButtons({ runEnded: true });
    }
  }

  onEvent(event) {
    if (event.type === "queued") this.run.queued(event.position ?? 1);
    else if (event.type === "started") this.run.started();
    else if (event.type === "progress") this.run.progress(event);
  }

  async cancel() {
    const current = this.current;
    if (!current) return;
    if (!current.id) {
      current.controller.abort();  // still sending: drop the request
      return;
    }
    this.cancelButton.disabled = true;
    this.run.setStatus("busy", "Cancelling…");
    try {
      await apiFetch(`${jobPath(current.id)}/cancel`, { method: "POST" });
    } catch (error) {
      this.cancelButton.disabled = false;
      this.toast(`Could not cancel: ${error.message}`);
    }
  }
}
