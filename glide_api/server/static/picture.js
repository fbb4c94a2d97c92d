// The image-to-image picture: chosen with a button, dropped or pasted; shown as it will be sent
// (the file itself: the server crops and resizes it).

const $ = (id) => document.getElementById(id);

export class PicturePicker {
  /** Elements by `prefix` (`${prefix}-file`, -choose, -replace, -drop, -drop-hint, -picture). */
  constructor({ prefix, onChange = () => {}, onError = () => {} }) {
    Object.assign(this, { onChange, onError });
    this.file = null;
    this.url = null;
    this.input = $(`${prefix}-file`);
    this.image = $(`${prefix}-picture`);
    this.drop = $(`${prefix}-drop`);
    this.hint = $(`${prefix}-drop-hint`);
    this.replace = $(`${prefix}-replace`);
    for (const button of [$(`${prefix}-choose`), this.replace]) {
      button.addEventListener("click", () => this.input.click());
    }
    this.input.addEventListener("change", () => {
      if (this.input.files?.[0]) this.load(this.input.files[0]);
      this.input.value = "";
    });
    this.drop.addEventListener("dragover", (e) => {
      e.preventDefault();
      this.drop.classList.add("dragging");
    });
    this.drop.addEventListener("dragleave", () => this.drop.classList.remove("dragging"));
    this.drop.addEventListener("drop", (e) => {
      e.preventDefault();
      this.drop.classList.remove("dragging");
      const file = e.dataTransfer?.files?.[0];
      if (file) this.load(file);
    });
  }

  load(file) {
    if (!file.type.startsWith("image/")) {
      this.onError(`${file.name || "That file"} is not a picture.`);
      return;
    }
    if (this.url) URL.revokeObjectURL(this.url);
    this.file = file;
    this.url = URL.createObjectURL(file);
    this.image.src = this.url;
    this.image.hidden = false;
    this.hint.hidden = true;
    this.replace.hidden = false;
    this.drop.dataset.empty = "false";
    this.onChange(file);
  }
}
