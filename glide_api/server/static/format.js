// How values are written for people: counts, byte sizes, sentences, and term/value lists (<dl>).

export const count = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : n);

/** A phrase as a sentence: capitalised, ending in a full stop ("" stays ""). */
export function sentence(text) {
  if (!text) return "";
  const capitalised = text[0].toUpperCase() + text.slice(1);
  return /[.!?]$/.test(capitalised) ? capitalised : `${capitalised}.`;
}

export function bytes(n) {
  if (typeof n !== "number") return n;
  return n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(1)} MiB` : `${Math.round(n / 1024)} KiB`;
}

/** Append one term and its value to a <dl>; an empty value (null, undefined, "") adds nothing. */
export function fact(list, term, value) {
  if (value === null || value === undefined || value === "") return;
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = String(value);
  list.append(dt, dd);
}

/** Replace a <dl>'s contents with [term, value] pairs (empty values left out). */
export function facts(list, entries) {
  list.replaceChildren();
  for (const [term, value] of entries) fact(list, term, value);
}
