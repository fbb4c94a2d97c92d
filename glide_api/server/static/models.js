// The models view: what /v1/models says is loaded (device, precision, one row per model), and the
// line under the header that names the active models and what a job may ask of them.

import { count, facts } from "./format.js";
import { CAPABILITY_LABELS } from "./readiness.js";

const $ = (id) => document.getElementById(id);

const ROLES = { base: "Base", upsample: "Upsampler", base_inpaint: "Base (inpainting)",
  upsample_inpaint: "Upsampler (inpainting)" };

/** Fill the Models card from a /v1/models answer. */
export function showModels(info) {
  const capabilities = Object.entries(info.capabilities ?? {})
    .map(([task, cap]) => [CAPABILITY_LABELS[task] ?? task, cap.state]);
  facts($("models-facts"), [["Ready", info.ready ? "yes" : "no"], ...capabilities,
    ["Device", info.device], ["Precision", info.precision]]);
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

/**
 * The line under the header: which models answer, what they make and what a job may ask for
 * (from the /v1/models and /v1/settings answers, either of which may still be null); hidden
 * while no text-to-image model is ready.
 */
export function showActiveModel(modelsInfo, settings) {
  const line = $("active-model");
  const models = modelsInfo?.ready ? modelsInfo.models ?? {} : {};
  const text2im = [models.base, models.upsample].filter(Boolean);
  if (!text2im.length) {
    line.hidden = true;
    return;
  }
  const name = document.createElement("strong");
  name.textContent = text2im.map((m) => m.name).join(" + ");
  const sizes = settings?.sizes?.text2im ?? [];
  const l = settings?.limits ?? {};
  const base = text2im[0];
  const about = [sizes.length && `${sizes.join(", ")} px`,
    base.text_ctx
      && `reads the first ${base.text_ctx} ${base.tokenizer === "bytes" ? "bytes" : "tokens"} of a prompt`,
    l.max_prompt_chars && `prompts up to ${l.max_prompt_chars} characters`,
    l.max_batch_size && `up to ${l.max_batch_size} images per job`].filter(Boolean);
  const note = Object.values(models).map((m) => m.about).find(Boolean);
  if (base.example_prompt) $("gen-prompt").placeholder = base.example_prompt;  // what this model can draw
  line.replaceChildren("Model: ", name, ` · ${about.join(" · ")}`,
    ...(note ? [document.createElement("br"), note] : []));
  line.hidden = false;
}
