// Messages to the user: toasts that are seen (errors, news) and announcements that screen readers
// speak (what an action did where nothing visible says so).

const MAX_TOASTS = 4;

/** Show a dismissable message; `timeout` ms later it goes (0: it stays until dismissed). */
export function toast(message, { kind = "error", timeout = 12000 } = {}) {
  const box = document.getElementById("toasts");
  const item = document.createElement("div");
  item.className = `toast ${kind}`;
  const text = document.createElement("p");
  text.textContent = message;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "small quiet";
  close.textContent = "✕";
  close.setAttribute("aria-label", "Dismiss this message");
  close.addEventListener("click", () => item.remove());
  item.append(text, close);
  box.append(item);
  while (box.children.length > MAX_TOASTS) box.firstElementChild.remove();
  if (timeout) setTimeout(() => item.remove(), timeout);
}

/** Have screen readers say `message` (again, even when it is the same as last time). */
export function announce(message) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  requestAnimationFrame(() => { region.textContent = message; });
}
