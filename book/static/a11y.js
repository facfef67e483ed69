// Accessibility repairs for markup the site does not write itself (WCAG 2.1 AA; the browser test
// runs axe-core on every page). Applied on load and to widgets as the widget manager renders them.
(function () {
  "use strict";

  // ipywidgets sliders: the handle (role="slider") gets the widget's description as its name.
  function nameSliders(root) {
    root.querySelectorAll(".widget-slider, .jupyter-widgets.widget-hslider").forEach(function (box) {
      var label = box.querySelector(".widget-label");
      var name = label && label.textContent.trim();
      box.querySelectorAll('[role="slider"]:not([aria-label])').forEach(function (handle) {
        handle.setAttribute("aria-label", name || "slider");
      });
    });
  }

  // A widget's output image is the figure the widget redraws: say so.
  function describeWidgetImages(root) {
    root.querySelectorAll(".jupyter-widgets img:not([alt]), .jp-RenderedImage img:not([alt])")
      .forEach(function (img) {
        img.setAttribute(
          "alt",
          "Figure drawn by the interactive widget for the values chosen in its controls " +
            "(run the notebook to change them); the static figure above shows the same plot."
        );
      });
  }

  // docutils writes the bibliography as role="list" around role="doc-biblioentry" entries, a
  // combination ARIA does not allow (a list holds list items): make each entry a list item.
  function fixCitationList(root) {
    root.querySelectorAll('.citation-list > [role="doc-biblioentry"]').forEach(function (entry) {
      entry.setAttribute("role", "listitem");
    });
  }

  // The "Show code cell source" toggles of folded cells carry aria-label="Toggle hidden content",
  // a name that leaves out their visible text (WCAG 2.5.3): let the visible text name them.
  function nameToggles(root) {
    root.querySelectorAll("summary[aria-label]").forEach(function (summary) {
      var label = summary.getAttribute("aria-label").toLowerCase();
      if (summary.textContent.toLowerCase().indexOf(label) === -1) {
        summary.removeAttribute("aria-label");
      }
    });
  }

  function repair(root) {
    nameToggles(root);
    nameSliders(root);
    describeWidgetImages(root);
    fixCitationList(root);
  }

  function start() {
    repair(document);
    new MutationObserver(function () {
      repair(document);
    }).observe(document.body, { childList: true, subtree: true });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
