// The view tabs (Generate, Inpaint, Models & settings): click or arrow keys, Home and End; the
// chosen view is kept in the address's #fragment so that a reload opens it again.

/** Wire the tabs and open the one the address names; returns select(name), e.g. select("inpaint"). */
export function initTabs() {
  const tabs = [...document.querySelectorAll('#tabs [role="tab"]')];
  const select = (tab, { focus = false } = {}) => {
    for (const other of tabs) {
      const on = other === tab;
      other.setAttribute("aria-selected", String(on));
      other.tabIndex = on ? 0 : -1;
      document.getElementById(other.getAttribute("aria-controls")).hidden = !on;
    }
    document.getElementById("gallery-section").hidden = tab.id === "tab-models";
    if (focus) tab.focus();
    history.replaceState(null, "", `#${tab.id.slice("tab-".length)}`);
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
      if (next === undefined) return;
      e.preventDefault();
      select(tabs[(next + tabs.length) % tabs.length], { focus: true });
    });
  });
  select(tabs.find((tab) => `#${tab.id.slice("tab-".length)}` === location.hash) ?? tabs[0]);
  return (name) => select(document.getElementById(`tab-${name}`));
}
