// Tabs in the WAI-ARIA pattern: buttons with role="tab" in a role="tablist", each naming its
// panel in aria-controls. Click or Enter/Space selects; Left/Right/Home/End move between tabs and
// select (automatic activation: the panels are already rendered, switching costs nothing).

/** Wire the tablist; returns { select(id), selected() }. `onSelect(id)` runs after a change. */
export function setupTabs(tablist, onSelect = () => {}) {
  const tabs = [...tablist.querySelectorAll('[role="tab"]')];

  function select(id, focus = false) {
    for (const tab of tabs) {
      const on = tab.id === id;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      document.getElementById(tab.getAttribute("aria-controls")).hidden = !on;
      if (on && focus) tab.focus();
    }
    onSelect(id);
  }

  for (const tab of tabs) {
    tab.addEventListener("click", () => select(tab.id));
    tab.addEventListener("keydown", (ev) => {
      const i = tabs.indexOf(tab);
      const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[ev.key];
      if (to === undefined) return;
      ev.preventDefault();
      select(tabs[(to + tabs.length) % tabs.length].id, true);
    });
  }

  return {
    select,
    selected: () => tabs.find((t) => t.getAttribute("aria-selected") === "true")?.id,
  };
}
