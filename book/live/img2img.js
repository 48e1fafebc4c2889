// Chapter 10's widget, data-widget="img2img": image to image with the default model.
// The reader draws on a small canvas (it opens on the chapter's red circle), picks a
// prompt, the strength lambda, N, g and the seed; generate encodes the drawing,
// starts at step k = N - floor(N lambda) from its latents plus noise, eq. (10.3), and
// runs the last floor(N lambda) Euler steps. A guided tour (tour.js) walks through
// chapter 10's ideas on the chapter's circle.
//
// It opens on minsd's result for its opening controls (minsd/live.py,
// IMG2IMG_DEFAULTS: the chapter's advice for an edit that keeps the drawing, guidance
// 1 and a small sigma_k), drawn when the book was built.
//
// A classic script (a page opened from disk may not import modules).
"use strict";
(() => {
  const minsd = (globalThis.minsd ??= {});
  const { config, h, range, pixel_canvas, draw_rgb, read_rgb, rgb_frames, figure } = minsd.ui;
  const { get_sigmas } = minsd.scheduler;

  // The guided tour (tour.js), on the chapter's circle: strength picks sigma_k, low
  // strength keeps the drawing, guidance moves the switch. Each card's claim is
  // checked by tests/test_live.py against what the widget draws.
  const tour_cards = (defaults) => [
    {
      title: "a little noise keeps the drawing",
      set: { ...defaults, drawing: "circle" },
      look: "image",
      text:
        "Strength 0.05 of 50 steps runs the last 2, from σ_k ≈ 0.14 (the caption). Too " +
        "little noise for the prompt to win: the circle stays a red circle, in its place.",
    },
    {
      title: "twice the strength",
      set: { ...defaults, drawing: "circle", strength: 0.1 },
      look: "image",
      ask: "Strength 0.1: 5 steps from σ_k ≈ 0.3. What becomes of the red circle?",
      choices: ["it stays red", "it turns blue, in its place", "a blue square elsewhere"],
      answer: 1,
      text:
        "Noise of σ_k ≈ 0.3 hides the circle's colour, not its layout: it turns blue " +
        "where it was drawn.",
    },
    {
      title: "strength picks σ_k",
      set: { ...defaults, drawing: "circle", strength: 0.5 },
      look: "strength",
      text:
        "Half the steps (k = 25) start at σ_k ≈ 1.6, about a tenth of σ₀ = 14.6: the " +
        "schedule crowds its steps at small σ. The blue square still sits where the " +
        "circle was drawn.",
    },
    {
      title: "from pure noise",
      set: { ...defaults, drawing: "circle", strength: 1 },
      look: "image",
      ask:
        "Strength 1 starts at σ₀ ≈ 14.6, where the drawing's latents are a small part " +
        "of the start. Will the square still sit where the circle was?",
      choices: ["yes", "only partly"],
      answer: 1,
      text:
        "The model draws a blue square of its own, which covers the drawn circle less " +
        "than at strength 0.5.",
    },
    {
      title: "σ_k, not strength",
      set: { ...defaults, drawing: "circle", steps: 20 },
      look: "image",
      text:
        "The same strength 0.05 with N = 20 runs one step, from σ_k ≈ 0.03: the result " +
        "differs from the drawing hardly more than the VAE's own encode and decode. " +
        "σ_k, not the strength, says how much survives.",
    },
    {
      title: "guidance moves the switch",
      set: { ...defaults, drawing: "circle", guidance: 7.5 },
      look: "image",
      ask: "Back to 2 of 50 steps from σ_k ≈ 0.14, now with guidance 7.5. Red or blue?",
      choices: ["red", "blue"],
      answer: 1,
      text:
        "Guidance pushes each step harder towards the prompt, so a smaller σ_k is " +
        "enough to lose the red: the circle turns blue. To edit rather than redraw, " +
        "keep g low.",
    },
  ];

  function img2img_widget(root) {
    const first = config.first.img2img;
    const defaults = first.defaults;
    const size = config.image_size;
    const palette = { ...config.vocabulary.colours, ...config.vocabulary.backgrounds };
    const drawing = pixel_canvas(size, "minsd-drawing");
    const context = drawing.getContext("2d");
    const circle = rgb_frames(first.drawing, 3 * size * size)[0]; // the chapter's
    let colour = Object.keys(palette)[0];
    const css = (name) => `rgb(${palette[name].join(",")})`;
    const swatches = Object.keys(palette).map((name) =>
      h("button", {
        type: "button",
        class: "minsd-swatch",
        title: name,
        "aria-label": name,
        style: `background: ${css(name)}`,
        onclick: (event) => {
          colour = name;
          for (const s of swatches) s.classList.toggle("minsd-chosen", s === event.currentTarget);
        },
      }),
    );
    swatches[0].classList.add("minsd-chosen");
    const brush = range("brush", { min: 1, max: 8, step: 1, value: 3, show: (v) => `${v} px` });
    const fill = h("button", { type: "button", onclick: () => clear(css(colour)) }, "Fill");
    const restore = h("button", { type: "button", onclick: () => redraw("circle") }, "Circle");
    const prompt = minsd.ui.prompt_controls();
    prompt.set(defaults.prompt);
    const strength = range("strength λ", {
      min: 0.01,
      max: 1,
      step: 0.01,
      value: defaults.strength,
      show: (v) => v.toFixed(2),
    });
    const steps = range("steps N", { min: 1, max: 50, step: 1, value: defaults.steps });
    const guidance = range("guidance g", { min: 1, max: 12, step: 0.5, value: defaults.guidance });
    const seed = minsd.ui.seed_control();
    seed.set(defaults.seed);
    const image_canvas = pixel_canvas(size, "minsd-result");
    const caption = h("p", { class: "minsd-caption" }, "");
    // The drawing as a control: set("circle") puts the chapter's circle back.
    const drawn = { set: (name) => redraw(name) };
    const controls = { prompt, strength, steps, guidance, seed, drawing: drawn };
    const parts = {
      drawing: figure("your drawing", drawing),
      image: figure("image to image", image_canvas),
    };

    function redraw(name) {
      if (name !== "circle") throw new RangeError(`no drawing '${name}'`);
      draw_rgb(drawing, circle);
    }
    function clear(fill_style) {
      context.fillStyle = fill_style;
      context.fillRect(0, 0, size, size);
      runner.request();
    }

    // Drawing: a round brush along the pointer's path, in drawing pixels.
    let last = null;
    const at = (event) => {
      const box = drawing.getBoundingClientRect();
      return [
        ((event.clientX - box.left) / box.width) * size,
        ((event.clientY - box.top) / box.height) * size,
      ];
    };
    const stroke = (from, to) => {
      context.strokeStyle = css(colour);
      context.lineWidth = brush.value;
      context.lineCap = "round";
      context.beginPath();
      context.moveTo(...from);
      context.lineTo(...to);
      context.stroke();
    };
    drawing.addEventListener("pointerdown", (event) => {
      drawing.setPointerCapture(event.pointerId);
      last = at(event);
      stroke(last, last);
    });
    drawing.addEventListener("pointermove", (event) => {
      if (last === null) return;
      const now = at(event);
      stroke(last, now);
      last = now;
    });
    const finish = () => {
      if (last === null) return;
      last = null;
      runner.request();
    };
    drawing.addEventListener("pointerup", finish);
    drawing.addEventListener("pointercancel", finish);

    const options = () => ({
      prompt: prompt.value,
      seed: seed.value,
      steps: steps.value,
      guidance: guidance.value,
      sampler: "euler",
      spacing: "linspace",
      strength: strength.value,
      init_pixels: read_rgb(drawing),
    });
    const same_pixels = (a, b) => a.every((v, j) => v === b[j]);

    // The caption of a run: where it started, and how many steps it ran.
    function describe(asked, sigmas) {
      const ran = sigmas.length - 1;
      const k = asked.steps - ran;
      caption.textContent =
        `Started at step k = ${k} of ${asked.steps} (σ_k = ${sigmas[0].toFixed(3)}) ` +
        `from the drawing's latents plus noise, and ran the last ${ran} Euler steps.`;
    }

    const runner = new minsd.ui.Runner(root, async (model, run) => {
      const asked = options();
      try {
        minsd.pipeline.check_strength(asked.strength, asked.steps);
      } catch (error) {
        run.say(error.message, true); // a pair of values that runs no step: say which
        caption.textContent = "";
        return;
      }
      const t0 = performance.now();
      const result = await minsd.pipeline.generate(model, asked, (i, n) => run.on_step(i, n));
      const ms = performance.now() - t0;
      root.minsdResult = { options: asked, ...result, ms };
      draw_rgb(image_canvas, result.pixels);
      describe(asked, result.sigmas);
      run.say(`${result.sigmas.length - 1} steps in ${(ms / 1000).toFixed(2)} s`);
    });

    // The API's run: a new run unless the shown result is for these controls.
    async function run() {
      const asked = options();
      const shown = root.minsdResult.options;
      const same = Object.keys(asked).every((k) =>
        k === "init_pixels" ? same_pixels(asked[k], shown[k]) : asked[k] === shown[k],
      );
      if (!same) await runner.request();
      return root.minsdResult;
    }

    for (const control of [prompt, strength, steps, guidance, seed]) {
      for (const input of control.inputs ?? [control.input]) {
        input.addEventListener("input", () => runner.request());
      }
    }
    const widget = minsd.ui.widget_api(root, controls, parts, run);
    root.append(
      minsd.ui.model_note(),
      minsd.tour(widget, tour_cards(defaults)),
      h(
        "div",
        { class: "minsd-panels" },
        parts.drawing,
        parts.image,
        h(
          "div",
          { class: "minsd-tools" },
          h("div", { class: "minsd-swatches" }, ...swatches),
          brush.root,
          h("div", { class: "minsd-buttons" }, fill, restore),
        ),
      ),
      prompt.root,
      h("div", { class: "minsd-controls" }, strength.root, steps.root),
      h("div", { class: "minsd-controls" }, guidance.root, seed.root),
      runner.bar,
      caption,
    );

    // The opening: the chapter's circle and minsd's edit of it.
    redraw("circle");
    const opening = options();
    const sigmas = get_sigmas(minsd.ui.sigma_table(), opening.steps, opening.spacing);
    const k = opening.steps - Math.floor(opening.steps * opening.strength);
    root.minsdResult = {
      options: opening,
      pixels: rgb_frames(first.pixels, 3 * size * size)[0],
      sigmas: sigmas.slice(k),
      prerendered: true,
    };
    draw_rgb(image_canvas, root.minsdResult.pixels);
    describe(opening, root.minsdResult.sigmas);
    runner.say(minsd.ui.first_result_note());
    return widget;
  }

  (minsd.widgets ??= {}).img2img = img2img_widget;
})();
