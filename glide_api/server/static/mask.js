// The inpainting picture and its mask. The picture is drawn at its own pixel size on one canvas;
// the mask is a second canvas of the same size on top, where painted pixels are opaque (shown
// tinted) and unpainted ones transparent. The mask sent to the server is built from it:
// white = keep, black = the area the model paints, same size as the picture.
//
// Painting works with a mouse, a pen or a finger (pointer events). Without a pointer, the tool
// buttons (fill all, invert, clear, undo) and the rectangle form make any rectangular mask.

const PAINT = "rgb(255, 45, 120)";
const UNDO_DEPTH = 20;
// Larger pictures are scaled down on load: the models work at 256 px at most, and a photo's PNG
// would exceed the upload limit.
const MAX_SIDE = 1024;

function toBlob(canvas) {
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("could not encode the PNG"))), "image/png");
  });
}

export class MaskEditor {
  constructor({ imageCanvas, maskCanvas, stack, dropZone, dropHint, fileInput, tools, brush, brushValue,
    info, onChange = () => {}, onError = () => {} }) {
    Object.assign(this, { imageCanvas, maskCanvas, stack, dropZone, dropHint, fileInput, tools, brush,
      brushValue, info, onChange, onError });
    this.image = this.imageCanvas.getContext("2d");
    this.mask = this.maskCanvas.getContext("2d", { willReadFrequently: true });
    this.loaded = false;
    this.fileName = "";
    this.undoStack = [];
    this.stroke = null;  // {pointerId, x, y} while painting

    this.cursor = document.createElement("div");
    this.cursor.className = "brush-cursor";
    this.cursor.hidden = true;
    this.stack.append(this.cursor);

    this.bindFiles();
    this.bindPainting();
    this.bindTools();
  }

  // ---- loading a picture ---------------------------------------------------------------------

  bindFiles() {
    this.fileInput.addEventListener("change", () => {
      const file = this.fileInput.files?.[0];
      if (file) this.load(file);
    });
    const zone = this.dropZone;
    zone.addEventListener("dragover", (e) => {
      if (![...(e.dataTransfer?.types ?? [])].includes("Files")) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", (e) => {
      if (!zone.contains(e.relatedTarget)) zone.classList.remove("dragging");
    });
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("dragging");
      const file = [...(e.dataTransfer?.files ?? [])].find((f) => f.type.startsWith("image/"));
      if (file) this.load(file);
      else this.onError("Drop a picture file (PNG, JPEG, WebP).");
    });
  }

  async load(file) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch {
      this.onError(`${file.name || "This file"} is not a picture this browser can read.`);
      return;
    }
    const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
    const width = Math.max(1, Math.round(bitmap.width * scale));
    const height = Math.max(1, Math.round(bitmap.height * scale));
    for (const canvas of [this.imageCanvas, this.maskCanvas]) {
      canvas.width = width;
      canvas.height = height;
    }
    this.image.drawImage(bitmap, 0, 0, width, height);
    this.mask.clearRect(0, 0, width, height);
    this.undoStack = [];
    this.loaded = true;
    this.fileName = file.name || "picture";
    this.stack.hidden = false;
    this.dropHint.hidden = true;
    this.dropZone.dataset.empty = "false";
    this.tools.disabled = false;
    const side = Math.min(width, height);
    this.brush.max = String(Math.max(8, Math.round(side / 2)));
    this.brush.value = String(Math.max(1, Math.round(side / 8)));
    this.brushValue.textContent = this.brush.value;
    // The rectangle form starts as the middle quarter of the picture.
    const rect = [["inp-rx", Math.floor(width / 4), width - 1], ["inp-ry", Math.floor(height / 4), height - 1],
      ["inp-rw", Math.max(1, Math.round(width / 2)), width], ["inp-rh", Math.max(1, Math.round(height / 2)), height]];
    for (const [id, value, max] of rect) {
      const input = document.getElementById(id);
      input.value = String(value);
      input.max = String(max);
    }
    const notes = [`${this.fileName}: ${width} × ${height} px`];
    if (scale < 1) notes.push(`scaled down from ${bitmap.width} × ${bitmap.height}`);
    if (width !== height) notes.push("the model sees its centre square");
    this.info.textContent = `${notes.join("; ")}.`;
    bitmap.close?.();
    this.onChange({ loaded: true, width, height });
  }

  // ---- painting with a pointer ---------------------------------------------------------------

  get erasing() {
    return this.tools.querySelector('input[name="mode"]:checked')?.value === "erase";
  }

  point(e) {
    const rect = this.maskCanvas.getBoundingClientRect();
    return {
      x: ((e.clientX - rect.left) * this.maskCanvas.width) / rect.width,
      y: ((e.clientY - rect.top) * this.maskCanvas.height) / rect.height,
    };
  }

  bindPainting() {
    const canvas = this.maskCanvas;
    canvas.addEventListener("pointerdown", (e) => {
      if (!this.loaded || e.button !== 0 || this.stroke) return;
      e.preventDefault();
      canvas.setPointerCapture(e.pointerId);
      this.snapshot();
      const { x, y } = this.point(e);
      this.stroke = { pointerId: e.pointerId, x, y };
      this.segment(x, y, x, y, e);
    });
    canvas.addEventListener("pointermove", (e) => {
      this.moveCursor(e);
      if (!this.stroke || e.pointerId !== this.stroke.pointerId) return;
      const events = e.getCoalescedEvents?.() ?? [];
      for (const sub of events.length ? events : [e]) {
        const { x, y } = this.point(sub);
        this.segment(this.stroke.x, this.stroke.y, x, y, sub);
        this.stroke.x = x;
        this.stroke.y = y;
      }
    });
    const end = (e) => {
      if (this.stroke && e.pointerId === this.stroke.pointerId) {
        this.stroke = null;
        this.changed();
      }
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("pointerleave", () => { this.cursor.hidden = true; });
  }

  segment(x0, y0, x1, y1, e) {
    // A pen paints thinner when pressed lightly; mouse and touch report 0.5 when down.
    const pressure = e.pointerType === "pen" && e.pressure > 0 ? Math.min(1, 0.25 + e.pressure) : 1;
    const ctx = this.mask;
    ctx.save();
    ctx.globalCompositeOperation = this.erasing ? "destination-out" : "source-over";
    ctx.strokeStyle = PAINT;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = Number(this.brush.value) * pressure;
    ctx.beginPath();
    ctx.moveTo(x0, y0);
    ctx.lineTo(x1 + 0.01, y1);  // a zero-length line draws nothing; nudge it into a dot
    ctx.stroke();
    ctx.restore();
  }

  moveCursor(e) {
    if (!this.loaded || e.pointerType === "touch") return;
    const rect = this.maskCanvas.getBoundingClientRect();
    const size = (Number(this.brush.value) * rect.width) / this.maskCanvas.width;
    const stackRect = this.stack.getBoundingClientRect();
    Object.assign(this.cursor.style, {
      width: `${size}px`,
      height: `${size}px`,
      left: `${e.clientX - stackRect.left - size / 2}px`,
      top: `${e.clientY - stackRect.top - size / 2}px`,
    });
    this.cursor.hidden = false;
  }

  // ---- tools ---------------------------------------------------------------------------------

  bindTools() {
    this.brush.addEventListener("input", () => { this.brushValue.textContent = this.brush.value; });
    this.tools.addEventListener("click", (e) => {
      const button = e.target.closest("button[data-mask]");
      if (!button || !this.loaded) return;
      const action = button.dataset.mask;
      if (action === "replace") this.fileInput.click();
      else if (action === "undo") this.undo();
      else if (action === "clear") this.edit(() => this.mask.clearRect(0, 0, this.width, this.height));
      else if (action === "fill") this.edit(() => this.fillRect(0, 0, this.width, this.height));
      else if (action === "invert") this.edit(() => this.invert());
      else if (action === "rect-paint" || action === "rect-erase") this.rectFromForm(action === "rect-erase");
    });
  }

  get width() { return this.maskCanvas.width; }
  get height() { return this.maskCanvas.height; }

  edit(change) {
    this.snapshot();
    change();
    this.changed();
  }

  fillRect(x, y, w, h) {
    this.mask.fillStyle = PAINT;
    this.mask.fillRect(x, y, w, h);
  }

  rectFromForm(erase) {
    const value = (id) => Math.round(Number(document.getElementById(id).value));
    const [x, y, w, h] = ["inp-rx", "inp-ry", "inp-rw", "inp-rh"].map(value);
    if (![x, y, w, h].every(Number.isFinite) || w < 1 || h < 1) {
      this.onError("The rectangle needs whole numbers: x, y from 0, width and height from 1.");
      return;
    }
    this.edit(() => {
      if (erase) this.mask.clearRect(x, y, w, h);
      else this.fillRect(x, y, w, h);
    });
  }

  invert() {
    const data = this.mask.getImageData(0, 0, this.width, this.height);
    const px = data.data;
    for (let i = 0; i < px.length; i += 4) {
      const painted = px[i + 3] >= 128;
      px[i] = 255; px[i + 1] = 45; px[i + 2] = 120;
      px[i + 3] = painted ? 0 : 255;
    }
    this.mask.putImageData(data, 0, 0);
  }

  snapshot() {
    this.undoStack.push(this.mask.getImageData(0, 0, this.width, this.height));
    if (this.undoStack.length > UNDO_DEPTH) this.undoStack.shift();
  }

  undo() {
    const previous = this.undoStack.pop();
    if (previous) {
      this.mask.putImageData(previous, 0, 0);
      this.changed();
    }
  }

  changed() {
    this.onChange({ loaded: this.loaded });
  }

  /** Share of the picture's pixels marked for painting (0 to 1). */
  paintedFraction() {
    if (!this.loaded) return 0;
    const px = this.mask.getImageData(0, 0, this.width, this.height).data;
    let count = 0;
    for (let i = 3; i < px.length; i += 4) if (px[i] >= 128) count++;
    return count / (this.width * this.height);
  }

  // ---- what is sent --------------------------------------------------------------------------

  imageBlob() {
    return toBlob(this.imageCanvas);
  }

  /**
   * The mask PNG: white where the picture is kept, black where the model paints. A canvas always
   * encodes RGBA, and a reader may take a mask's alpha channel as the mask (OpenAI's convention:
   * transparent = paint), so painted pixels are also transparent: both readings agree.
   */
  maskBlob() {
    const out = document.createElement("canvas");
    out.width = this.width;
    out.height = this.height;
    const ctx = out.getContext("2d");
    const source = this.mask.getImageData(0, 0, this.width, this.height).data;
    const target = ctx.createImageData(this.width, this.height);
    const px = target.data;
    for (let i = 0; i < px.length; i += 4) {
      const level = source[i + 3] >= 128 ? 0 : 255;
      px[i] = px[i + 1] = px[i + 2] = px[i + 3] = level;
    }
    ctx.putImageData(target, 0, 0);
    return toBlob(out);
  }
}
