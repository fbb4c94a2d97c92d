// Jobs: reading one job's JSON into a steady shape, following its progress events, and showing
// that progress (status line, progress bar, preview image, a polite live region).

import { ApiError, apiFetch, getJSON, readEvents, sleep } from "./api.js";

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

function pick(object, ...names) {
  for (const name of names) {
    if (object && object[name] !== undefined && object[name] !== null) return object[name];
  }
  return null;
}

export function jobPath(id) {
  return `/v1/jobs/${encodeURIComponent(id)}`;
}

/**
 * The job JSON as the UI uses it, whichever form the server sent: the v1 form (images, chain at the
 * top, image urls) or the engine's (under `result`, images by index).
 */
export function normalizeJob(job) {
  const request = job.request ?? {};
  const settings = request.settings ?? {};
  const result = job.result ?? {};
  const images = (job.images ?? result.images ?? []).map((image, i) => {
    const index = image.index ?? i;
    return {
      index,
      seed: pick(image, "seed") ?? pick(image.metadata, "seed") ?? request.seeds?.[index] ?? null,
      url: image.url ?? `${jobPath(job.id)}/images/${index}.png`,
    };
  });
  return {
    id: job.id,
    status: job.status,
    error: job.error ?? null,
    task: pick(settings, "task") ?? pick(request, "task") ?? "text2im",
    prompt: request.prompt ?? "",
    size: pick(request, "size") ?? pick(settings, "size"),
    batchSize: pick(request, "batch_size", "n") ?? images.length,
    guidanceScale: pick(request, "guidance_scale") ?? pick(settings, "guidance_scale"),
    seeds: request.seeds ?? images.map((image) => image.seed),
    steps: pick(settings, "steps", "base_respacing") ?? pick(request, "steps"),
    upsampleSteps: pick(settings, "upsample_steps", "upsample_respacing") ?? pick(request, "upsample_steps"),
    sampler: pick(settings, "sampler", "base_sampler") ?? pick(request, "sampler"),
    upsampleSampler: pick(settings, "upsample_sampler") ?? pick(request, "upsample_sampler"),
    eta: pick(settings, "eta") ?? pick(request, "eta"),
    upsampleTemp: pick(settings, "upsample_temp") ?? pick(request, "upsample_temp"),
    negativePrompt: pick(request, "negative_prompt"),
    guidanceInterval: pick(request, "guidance_interval"),
    strength: pick(settings, "strength"),
    chain: job.chain ?? result.chain ?? [],
    totalSeconds: pick(job, "total_seconds") ?? pick(result, "total_seconds"),
    createdAt: job.created_at ?? null,
    images,
  };
}

/**
 * Follow a job's events until its final one; calls onEvent for each (in order, none twice) and
 * returns the final event. A dropped stream is resumed (Last-Event-ID, and duplicates skipped);
 * when streaming keeps failing, the job itself is polled.
 */
export async function followJob(id, { previews = true, signal, onEvent = () => {} } = {}) {
  let lastSeq = -1;
  for (let failures = 0; ; failures++) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastSeq >= 0) headers["Last-Event-ID"] = String(lastSeq);
      const query = previews ? "?previews=1" : "";
      const response = await apiFetch(`${jobPath(id)}/events${query}`, { headers, signal });
      for await (const message of readEvents(response)) {
        const data = message.data;
        if (!data || typeof data !== "object") continue;
        const type = data.type ?? message.event;
        const seq = Number.isInteger(data.seq) ? data.seq : -1;
        if (seq >= 0) {
          if (seq <= lastSeq) continue;  // seen before a reconnect
          lastSeq = seq;
        }
        const event = { ...data, type };
        onEvent(event);
        if (TERMINAL.has(type)) return event;
      }
    } catch (error) {
      if (error.name === "AbortError") throw error;
      // A 4xx other than rate limiting (unknown job, bad key) will not get better by retrying.
      if (error instanceof ApiError && error.status >= 400 && error.status < 500 && error.status !== 429) {
        throw error;
      }
    }
    // The stream ended early or failed: has the job finished meanwhile?
    const job = await getJSON(jobPath(id), { signal }).catch((error) => {
      if (error.name === "AbortError") throw error;
      return null;
    });
    if (job && TERMINAL.has(job.status)) {
      const event = { type: job.status, job_id: id, job, message: job.error };
      onEvent(event);
      return event;
    }
    if (failures >= 30) {
      throw new ApiError({ message: "Lost contact with the server while following the job." });
    }
    await sleep(Math.min(500 * (failures + 1), 3000), signal);
  }
}

/** The progress panel of one view (ids `${prefix}-status`, `-stage`, `-progress`, `-preview`, `-live`). */
export class RunView {
  constructor(prefix) {
    const $ = (suffix) => document.getElementById(`${prefix}-${suffix}`);
    this.status = $("status");
    this.stage = $("stage");
    this.bar = $("progress");
    this.preview = $("preview");
    this.placeholder = $("preview-placeholder");
    this.live = $("live");
    this.lastAnnounced = "";
  }

  reset() {
    this.setStatus("idle", "Idle");
    this.stage.textContent = "";
    this.bar.value = 0;
    this.lastAnnounced = "";
  }

  setStatus(state, text, { announce = true } = {}) {
    this.status.dataset.state = state;
    this.status.textContent = text;
    if (announce) this.announce(text);
  }

  announce(text) {
    // Progress moves every step; the live region speaks only when the words change.
    if (text && text !== this.lastAnnounced) {
      this.lastAnnounced = text;
      this.live.textContent = text;
    }
  }

  submitting() {
    this.setStatus("busy", "Sending…");
    this.stage.textContent = "";
    this.bar.value = 0;
  }

  queued(position) {
    this.setStatus("queued", position > 1 ? `Queued: position ${position}` : "Queued: next in line");
    this.bar.removeAttribute("value");  // indeterminate while waiting
  }

  started() {
    this.setStatus("running", "Running");
    this.bar.value = 0;
  }

  progress(event) {
    const stages = Math.max(1, event.stages ?? 1);
    const total = Math.max(1, event.total ?? 1);
    const overall = Math.min(1, ((event.stage_index ?? 0) + (event.step ?? 0) / total) / stages);
    this.bar.value = Math.round(overall * 1000);
    this.bar.setAttribute("aria-valuetext", `${Math.round(overall * 100)} percent`);
    const stageOf = stages > 1 ? ` (stage ${(event.stage_index ?? 0) + 1} of ${stages})` : "";
    this.stage.textContent = `${event.stage ?? "sampling"}: step ${event.step} of ${total}${stageOf}`;
    if (this.status.dataset.state !== "running") this.setStatus("running", "Running", { announce: false });
    this.announce(`Running ${event.stage ?? ""}${stageOf}`);
    if (event.preview) this.showPreview(`data:image/png;base64,${event.preview}`);
  }

  showPreview(src) {
    this.preview.src = src;
    this.preview.hidden = false;
    this.placeholder.hidden = true;
  }

  finished(event, count) {
    if (event.type === "succeeded") {
      this.bar.value = this.bar.max;
      this.setStatus("done", count === 1 ? "Done: the image is in the gallery"
        : `Done: ${count} images are in the gallery`);
    } else if (event.type === "cancelled") {
      if (!this.bar.hasAttribute("value")) this.bar.value = 0;
      this.setStatus("cancelled", "Cancelled");
    } else {
      if (!this.bar.hasAttribute("value")) this.bar.value = 0;
      this.setStatus("failed", `Failed: ${event.message || "the job did not finish"}`);
    }
  }

  error(message) {
    if (!this.bar.hasAttribute("value")) this.bar.value = 0;
    this.setStatus("failed", message);
  }
}
