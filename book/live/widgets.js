// The book's live widgets: every element <div class="minsd-live" data-widget="NAME">
// becomes one, when the page has loaded. One file per widget registers itself in
// minsd.widgets:
//
//   toy      chapter 2: sampler paths on the 2-D mixture (toy_widget.js)
//   loop     chapter 7: the whole sampling loop with the default model (loop.js)
//   img2img  chapter 10: image to image from a drawing (img2img.js)
//   attention  chapter 11: the cross-attention maps of the reader's prompt (attention.js)
//
// A chapter's block may hold a fallback for readers of the notebook in JupyterLab,
// <p class="minsd-live-fallback">...</p>; the widget takes its place. Each widget
// records its state in data-state ("idle", "loading", "running", "done", "error"),
// counts its finished runs in data-runs, and keeps its API (ui.js) in
// element.minsdWidget for a guided tour.
//
// A classic script (a page opened from disk may not import modules).
"use strict";
(() => {
  const minsd = (globalThis.minsd ??= {});

  function start() {
    for (const root of document.querySelectorAll(".minsd-live[data-widget]")) {
      const make = minsd.widgets?.[root.dataset.widget];
      if (make === undefined || root.dataset.started) continue;
      root.dataset.started = "true";
      for (const fallback of root.querySelectorAll(".minsd-live-fallback")) fallback.remove();
      try {
        root.minsdWidget = make(root);
      } catch (error) {
        root.dataset.state = "error";
        const text = `This live widget could not start: ${error.message}`;
        root.append(minsd.ui.h("p", { class: "minsd-error" }, text));
        console.error(error);
      }
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  minsd.start_widgets = start;
})();
