// The bounds of the numeric options, as /v1/settings gives them: on the inputs (min, max) and in the
// error messages that check them ("1 to 4", "at least 0").

// FALLBACK: /v1/settings reports only limits.max_batch_size and limits.max_steps. Until it also sends
// `ranges` ({name: {min, max}}), the API's own bounds stand in here. Delete once the server sends them.
const FALLBACK_RANGES = {
  n: { min: 1 },
  seed: { min: 0, max: 4294967295 },
  guidance_scale: { min: 0, max: 100 },
  eta: { min: 0, max: 1 },
  upsample_temp: { min: 0, max: 1 },
  diffusion_steps: { min: 1 },
};

/**
 * {min, max} of a numeric option by its control's name (n, seed, guidance_scale, eta, upsample_temp,
 * or diffusion_steps for a default step count); a bound the server does not set is undefined.
 */
export function rangeOf(settings, name) {
  const limits = settings?.limits ?? {};
  const range = { ...(settings?.ranges?.[name] ?? FALLBACK_RANGES[name]) };
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

/** The range in words: "1 to 4", "at least 1" or "at most 4". */
export function describeRange({ min, max }) {
  if (max === undefined) return `at least ${min}`;
  return min === undefined ? `at most ${max}` : `${min} to ${max}`;
}

/** Whether a number lies in the range (a missing bound does not limit). */
export function inRange(value, { min, max }) {
  return (min === undefined || value >= min) && (max === undefined || value <= max);
}
