// The settings view: the server's defaults and limits as /v1/settings gives them, and the two forms
// that change the default diffusion steps of the base model and the upsampler (/basemodel, /upmodel).

import { apiFetch } from "./api.js";
import { bytes, count, facts } from "./format.js";
import { applyRange, askFor, describeRange, inRange, rangeOf } from "./options.js";

const $ = (id) => document.getElementById(id);

// [element id prefix, route, parameter count field of its answer, label]
const STEP_FORMS = [["basemodel", "/basemodel", "base_model_total_parameters", "Base model"],
  ["upmodel", "/upmodel", "upsample_model_total_parameters", "Upsampler"]];

/** Fill the Defaults and Limits cards, and the step forms the user has not edited, from /v1/settings. */
export function showSettings(settings) {
  const d = settings.defaults ?? {};
  const l = settings.limits ?? {};
  facts($("defaults-facts"), [["Size", d.size && `${d.size} px`], ["Images", d.batch_size],
    ["Guidance scale", d.guidance_scale], ["Base steps", d.steps], ["Upsampler steps", d.upsample_steps],
    ["Base sampler", d.sampler], ["Upsampler sampler", d.upsample_sampler], ["Eta", d.eta],
    ["Upsample temperature", d.upsample_temp],
    ["Sizes", (settings.sizes?.text2im ?? []).join(", ") || "none"],
    ["Inpainting sizes", (settings.sizes?.inpaint ?? []).join(", ") || "none"],
    ["Image-to-image sizes", (settings.sizes?.img2img ?? []).join(", ") || "none"],
    ["Samplers", (settings.samplers ?? []).join(", ")],
    ["Presets", (settings.presets ?? []).map((preset) => preset.name).join(", ")]]);
  facts($("limits-facts"), [["Images per job", l.max_batch_size], ["Prompt length", l.max_prompt_chars
    && `${l.max_prompt_chars} characters`], ["Upload size", bytes(l.max_upload_bytes)], ["Steps", l.max_steps
    && describeRange(rangeOf(settings, "diffusion_steps"))]]);
  for (const [name, value] of [["basemodel", d.steps], ["upmodel", d.upsample_steps]]) {
    $(`${name}-current`).textContent = value ? `Now: ${value}` : "";
    const input = $(`${name}-steps`);
    applyRange(input, rangeOf(settings, "diffusion_steps"));
    if (/^\d+$/.test(String(value)) && (!input.value || input.dataset.fromServer === "true")) {
      input.value = String(value);
      input.dataset.fromServer = "true";
    }
  }
}

/** Wire the step forms; getSettings() is the latest /v1/settings answer (or null), reload() refreshes it. */
export function initStepForms({ getSettings, reload }) {
  for (const [name, route, field, label] of STEP_FORMS) {
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
      const range = rangeOf(getSettings(), "diffusion_steps");
      if (!/^\d+$/.test(steps) || !inRange(Number(steps), range)) {
        fail(askFor("a whole number of steps", range));
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
