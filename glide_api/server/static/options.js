// The generation options as /v1/settings describes them (`options`: name, type, default, minimum,
// maximum, choices, help), looked up by the name of the form control that holds one; and their ranges:
// on the inputs (min, max), in the error messages that check them ("1 to 4", "at least 0") and in checks.

// Form control name -> option name, where they differ (the form's `n` is the API's batch_size).
const OPTION_NAMES = { n: "batch_size" };
const CONTROL_NAMES = Object.fromEntries(
  Object.entries(OPTION_NAMES).map(([control, option]) => [option, control]));

/** The options /v1/settings describes, each with `control`: the name of the form control that holds it. */
export function optionsOf(settings) {
  return (settings?.options ?? []).map(
    (option) => ({ ...option, control: CONTROL_NAMES[option.name] ?? option.name }));
}

/** The option a form control holds (see optionsOf), or undefined when the server does not describe it. */
export function optionOf(settings, name) {
  const optionName = OPTION_NAMES[name] ?? name;
  return optionsOf(settings).find((option) => option.name === optionName);
}

/** The values a control may take, [] when the server lists none. */
export function choicesOf(settings, name) {
  return optionOf(settings, name)?.choices ?? [];
}

/**
 * {min, max} of a numeric option by its control's name, or of "diffusion_steps" (a default step
 * count, bounded by limits.max_steps); a bound the server does not set is undefined. The server's
 * limits cap what the options allow: `n` by limits.max_batch_size.
 */
export function rangeOf(settings, name) {
  const limits = settings?.limits ?? {};
  const option = optionOf(settings, name);
  const range = { min: option?.minimum ?? undefined, max: option?.maximum ?? undefined };
  if (name === "n" && limits.max_batch_size) range.max = limits.max_batch_size;
  if (name === "diffusion_steps" && limits.max_steps) range.max = limits.max_steps;
  return range;
}

/** Put a range on an <input type="number"> (a missing bound removes the attribute). */
export function applyRange(input, { min, max }) {
  for (const [attribute, value] of [["min", min], ["max", max]]) {
    if (value === undefined) input.removeAttribute(attribute);
    else input.setAttribute(attribute, String(value));
  }
}

/** The range in words: "1 to 4", "at least 1" or "at most 4" ("" when it has no bound). */
export function describeRange({ min, max }) {
  if (max === undefined) return min === undefined ? "" : `at least ${min}`;
  return min === undefined ? `at most ${max}` : `${min} to ${max}`;
}

/** The request for a value in the range: "Enter a number, 0 to 100." (no bounds: "Enter a number."). */
export function askFor(what, range) {
  const bounds = describeRange(range);
  return bounds ? `Enter ${what}, ${bounds}.` : `Enter ${what}.`;
}

/** Whether a number lies in the range (a missing bound does not limit). */
export function inRange(value, { min, max }) {
  return (min === undefined || value >= min) && (max === undefined || value <= max);
}
