// The API-key dialog: asks for the key, keeps it (api.js stores it) or forgets it.

import { getKey, setKey } from "./api.js";

/** Show the dialog with `message`; resolves to whether the user saved a (new) key. */
export function askForKey(message) {
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-message").textContent = message || "This server asks for an API key.";
  input.value = getKey();
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const choice = dialog.returnValue;
      if (choice === "save" && input.value.trim()) {
        setKey(input.value.trim());
        resolve(true);
      } else {
        if (choice === "forget") setKey("");
        resolve(false);
      }
      input.value = "";
    }, { once: true });
    dialog.showModal();
    input.focus();
  });
}
