// The gallery: finished jobs, newest first, each with its images (fetched with the API key, shown
// and downloadable from blob: URLs), its prompt and settings, and reuse buttons. Job ids are kept
// in localStorage so that a reload shows what the server still holds.

import { apiFetch, getJSON } from "./api.js";
import { fact } from "./format.js";
import { jobPath, normalizeJob } from "./jobs.js";

const STORAGE = "glide-api.gallery";
const KEEP = 48;

function slug(text, length = 48) {
  const s = text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
  return s.slice(0, length).replace(/-+$/, "") || "image";
}

export function downloadName(job, image) {
  const kind = job.task === "text2im" ? "glide" : `glide-${job.task}`;
  return `${kind}-${slug(job.prompt)}-${image.seed ?? image.index}.png`;
}

export class Gallery {
  /**
   * list: the <ol>; empty: the "nothing yet" note;
   * onReuse(job) and onSameSeed(job, image): fill a form from a result.
   */
  constructor({ list, empty, clearButton, onReuse, onSameSeed, onError }) {
    this.list = list;
    this.empty = empty;
    this.onReuse = onReuse;
    this.onSameSeed = onSameSeed;
    this.onError = onError;
    this.cards = new Map();  // job id -> {element, urls}
    this.cardTemplate = document.getElementById("gallery-card");
    this.imageTemplate = document.getElementById("gallery-image");
    clearButton.addEventListener("click", () => this.clear());
    this.update();
  }

  storedIds() {
    try {
      const ids = JSON.parse(localStorage.getItem(STORAGE) || "[]");
      return Array.isArray(ids) ? ids.filter((id) => typeof id === "string") : [];
    } catch {
      return [];
    }
  }

  store(ids) {
    try {
      localStorage.setItem(STORAGE, JSON.stringify(ids.slice(0, KEEP)));
    } catch {
      // storage unavailable: the gallery lasts as long as the page
    }
  }

  remember(id) {
    this.store([id, ...this.storedIds().filter((other) => other !== id)]);
  }

  forget(id) {
    this.store(this.storedIds().filter((other) => other !== id));
  }

  /** Show again the stored jobs the server still holds; forget those it has dropped or that ended badly. */
  async restore() {
    for (const id of this.storedIds()) {
      try {
        const job = await getJSON(jobPath(id));
        if (job.status === "succeeded") this.add(normalizeJob(job), { atEnd: true });
        else if (["failed", "cancelled"].includes(job.status)) this.forget(id);
      } catch (error) {
        if (error.status === 404) this.forget(id);  // evicted by the server
      }
    }
  }

  has(id) {
    return this.cards.has(id);
  }

  /** Show a finished job (normalized) at the top, or at the bottom when restoring older ones. */
  add(job, { atEnd = false } = {}) {
    if (this.cards.has(job.id)) return;
    const element = this.cardTemplate.content.firstElementChild.cloneNode(true);
    element.dataset.jobId = job.id;
    const entry = { element, urls: [] };
    this.cards.set(job.id, entry);

    const prompt = element.querySelector(".job-prompt");
    prompt.textContent = job.prompt || "(no prompt)";
    if (job.task !== "text2im") {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = job.task;
      prompt.prepend(badge, " ");
    }
    const facts = element.querySelector(".job-facts");
    fact(facts, "Size", job.size ? `${job.size} × ${job.size}` : null);
    fact(facts, "Seeds", job.images.map((image) => image.seed).join(", "));
    fact(facts, "Guidance", job.guidanceScale);
    fact(facts, "Negative prompt", job.negativePrompt);
    const [lo, hi] = job.guidanceInterval ?? [0, 1];
    if (lo > 0 || hi < 1) fact(facts, "Guided on", `t/T ${lo} to ${hi}`);
    fact(facts, "Strength", job.strength);
    fact(facts, "Steps", [job.steps, job.upsampleSteps].filter((s) => s !== null).join(" / "));
    fact(facts, "Samplers", [job.sampler, job.upsampleSampler].filter(Boolean).join(" / "));
    if (job.eta) fact(facts, "Eta", job.eta);
    fact(facts, "Upsample temp", job.upsampleTemp);
    fact(facts, "Chain", job.chain.join(" → "));
    if (typeof job.totalSeconds === "number") fact(facts, "Time", `${job.totalSeconds.toFixed(1)} s`);

    const images = element.querySelector(".job-images");
    for (const image of job.images) images.append(this.figure(job, image, entry));

    element.querySelector('[data-action="reuse"]').addEventListener("click", () => this.onReuse(job));
    element.querySelector('[data-action="remove"]').addEventListener("click", () => this.remove(job.id));

    if (atEnd) {
      this.list.append(element);  // restoring: the stored order is already newest first
    } else {
      this.list.prepend(element);
      this.remember(job.id);
    }
    this.update();
  }

  figure(job, image, entry) {
    const figure = this.imageTemplate.content.firstElementChild.cloneNode(true);
    const img = figure.querySelector("img");
    img.alt = `${job.prompt} (seed ${image.seed})`;
    if (job.size) img.width = img.height = job.size;  // room kept before it loads; CSS keeps it square
    figure.querySelector(".seed").textContent = `seed ${image.seed}`;
    const link = figure.querySelector("a");
    link.download = downloadName(job, image);
    link.setAttribute("aria-label", `Download the image with seed ${image.seed}`);
    link.setAttribute("aria-disabled", "true");
    link.addEventListener("click", (e) => { if (!link.href) e.preventDefault(); });
    figure.querySelector('[data-action="same-seed"]').addEventListener("click", () => this.onSameSeed(job, image));
    this.load(image.url, img, link, entry);
    return figure;
  }

  async load(url, img, link, entry) {
    // Fetched rather than <img src=url>: the server may want the API key, which <img> cannot send.
    try {
      const response = await apiFetch(url, { headers: { Accept: "image/png" } });
      const blobUrl = URL.createObjectURL(await response.blob());
      entry.urls.push(blobUrl);
      img.src = blobUrl;
      link.href = blobUrl;
      link.removeAttribute("aria-disabled");
      link.dataset.source = url;
    } catch (error) {
      img.alt = `Could not load the image: ${error.message}`;
      this.onError?.(error);
    }
  }

  remove(id) {
    const entry = this.cards.get(id);
    if (entry) {
      const next = entry.element.nextElementSibling ?? entry.element.previousElementSibling;
      entry.urls.forEach((url) => URL.revokeObjectURL(url));
      entry.element.remove();
      this.cards.delete(id);
      (next?.querySelector("button") ?? document.getElementById("gallery-title")).focus?.();
    }
    this.forget(id);
    this.update();
  }

  clear() {
    for (const id of [...this.cards.keys()]) this.remove(id);
    this.store([]);
  }

  update() {
    this.empty.hidden = this.cards.size > 0;
  }
}
