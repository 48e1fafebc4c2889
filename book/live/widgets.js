// The book's live widgets: every element <div class="minsd-live" data-widget="...">
// becomes one, when the page has loaded.
//
//   loop     the full sampling loop with the default model: prompt, seed, steps N,
//            guidance g, sampler and spacing; after a run, a slider over step i shows
//            x_i, D(x_i; sigma_i) decoded and the schedule
//   img2img  image to image: draw on a small canvas, pick a prompt, drag the strength
//   toy      the 2-D mixture of chapter 1: sampler paths with N steps beside the exact
//            flow, and the cloud at any noise level sigma (no ONNX needed)
//
// The model loads on the first Run (runtime.js); after that every change of a control
// recomputes. Each widget records its state in data-state ("idle", "loading",
// "running", "done", "error") and counts its finished runs in data-runs.
//
// A classic script (a page opened from disk may not import modules).
"use strict";
(() => {
  const minsd = (globalThis.minsd ??= {});
  // Written into the page by the book build (book/_ext/minsd_live.py).
  const config = globalThis.minsdLiveConfig ?? {};
  const vocabulary = config.vocabulary ?? {
    colours: { red: [220, 40, 40] },
    shapes: ["circle"],
    backgrounds: { black: [20, 20, 20] },
  };

  // -- Small pieces ----------------------------------------------------------------------

  function h(tag, props = {}, ...children) {
    const element = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") element.className = value;
      else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
      else element.setAttribute(key, value);
    }
    element.append(...children);
    return element;
  }

  // A labelled range input; show(value) formats what the label prints beside it.
  function range(label, { min, max, step, value, show = String }) {
    const input = h("input", { type: "range", min, max, step, value });
    const shown = h("output", {}, show(Number(value)));
    input.addEventListener("input", () => (shown.textContent = show(Number(input.value))));
    const root = h("label", { class: "minsd-control" }, `${label} `, input, " ", shown);
    const set = (v) => {
      input.value = v;
      shown.textContent = show(Number(input.value));
    };
    return {
      root,
      input,
      set,
      get value() {
        return Number(input.value);
      },
    };
  }

  function choice(label, options, value) {
    const select = h("select", {});
    for (const [key, text] of options) select.append(h("option", { value: key }, text));
    select.value = value;
    const root = h("label", { class: "minsd-control" }, label ? `${label} ` : "", select);
    return {
      root,
      input: select,
      get value() {
        return select.value;
      },
    };
  }

  function pixel_canvas(size, shown, className = "") {
    return h("canvas", {
      width: size,
      height: size,
      class: `minsd-pixels ${className}`,
      style: `width: ${shown}px; height: ${shown}px`,
    });
  }

  // rgb: (3, H, W) in [0, 1] -> the canvas's pixels, rounded to 8 bits.
  function draw_rgb(canvas, rgb) {
    const context = canvas.getContext("2d");
    const image = context.createImageData(canvas.width, canvas.height);
    const hw = canvas.width * canvas.height;
    for (let p = 0; p < hw; p++) {
      for (let c = 0; c < 3; c++) image.data[4 * p + c] = Math.round(rgb[c * hw + p] * 255);
      image.data[4 * p + 3] = 255;
    }
    context.putImageData(image, 0, 0);
  }

  // The canvas's pixels as (3, H, W) floats in [0, 1], as minsd reads an image.
  function read_rgb(canvas) {
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    const hw = canvas.width * canvas.height;
    const rgb = new Float32Array(3 * hw);
    for (let p = 0; p < hw; p++) {
      for (let c = 0; c < 3; c++) rgb[c * hw + p] = data[4 * p + c] / 255;
    }
    return rgb;
  }

  function figure(label, canvas) {
    return h("figure", { class: "minsd-panel" }, canvas, h("figcaption", {}, label));
  }

  // The part every model widget shares: a Run button, a progress bar and one status
  // line. compute(model, runner) does one run; requests while it runs are merged into
  // one more run afterwards, so dragging a slider never queues stale work.
  class Runner {
    constructor(root, compute) {
      this.root = root;
      this.compute = compute;
      this.model = null;
      this.running = false;
      this.pending = false;
      this.runs = 0;
      this.button = h("button", { type: "button", onclick: () => this.request(true) }, "Run");
      this.progress = h("progress", { max: 1, value: 0 });
      this.status = h("span", { class: "minsd-status" }, "Press Run to load the model.");
      this.bar = h("div", { class: "minsd-run" }, this.button, this.progress, this.status);
      root.dataset.state = "idle";
      root.dataset.runs = "0";
    }

    say(text, error = false) {
      this.status.textContent = text;
      this.status.classList.toggle("minsd-error", error);
    }

    // From a control: recompute once the model is loaded; from Run: load it first.
    request(from_button = false) {
      if (this.model === null && !from_button) return;
      if (this.running) {
        this.pending = true;
        return;
      }
      this.start();
    }

    async start() {
      this.running = true;
      try {
        if (this.model === null) {
          this.root.dataset.state = "loading";
          this.model = await minsd.runtime.load((fraction, what) => {
            this.progress.value = fraction;
            this.say(`Loading ${what}...`);
          });
        }
        do {
          this.pending = false;
          this.root.dataset.state = "running";
          await this.compute(this.model, this);
          this.runs += 1;
          this.root.dataset.runs = String(this.runs);
        } while (this.pending);
        this.root.dataset.state = "done";
      } catch (error) {
        this.root.dataset.state = "error";
        this.progress.value = 0;
        this.say(`The live model could not run here: ${error.message}`, true);
        console.error(error);
      } finally {
        this.running = false;
        this.pending = false;
      }
    }

    on_step(i, n) {
      this.progress.value = (i + 1) / n;
      this.say(`step ${i + 1} of ${n}`);
    }
  }

  // What every model widget says about the model it runs.
  function model_note() {
    const note = config.other_weights
      ? `The figures on this page were drawn with ${config.other_weights}; this widget runs ` +
        "minsd's default model in your browser instead (SD 1.5 is far too large for a page)."
      : "This widget runs minsd's default model in your browser with ONNX Runtime Web.";
    const size = config.download_mb ? ` The first Run loads ${config.download_mb} MB.` : "";
    return h("p", { class: "minsd-note" }, note + size);
  }

  function prompt_controls() {
    const pick = (obj) => (Array.isArray(obj) ? obj : Object.keys(obj)).map((k) => [k, k]);
    const colour = choice("", pick(vocabulary.colours), Object.keys(vocabulary.colours)[0]);
    const shape = choice("", pick(vocabulary.shapes), vocabulary.shapes[0]);
    const background = choice(
      "",
      pick(vocabulary.backgrounds),
      Object.keys(vocabulary.backgrounds)[0],
    );
    const root = h(
      "div",
      { class: "minsd-prompt" },
      "Prompt: a ",
      colour.root,
      " ",
      shape.root,
      " on a ",
      background.root,
      " background",
    );
    return {
      root,
      inputs: [colour.input, shape.input, background.input],
      get value() {
        return `a ${colour.value} ${shape.value} on a ${background.value} background`;
      },
    };
  }

  function seed_control() {
    const n = config.num_seeds ?? 100;
    return range("seed", { min: 0, max: n - 1, step: 1, value: 0 });
  }

  // -- The full loop ---------------------------------------------------------------------

  const SAMPLER_NAMES = [
    ["euler", "Euler"],
    ["heun", "Heun"],
    ["dpmpp_2m", "DPM-Solver++(2M)"],
  ];
  const SPACING_NAMES = [
    ["linspace", "linspace"],
    ["karras", "Karras"],
  ];

  function loop_widget(root) {
    const prompt = prompt_controls();
    const seed = seed_control();
    const steps = range("steps N", { min: 1, max: 50, step: 1, value: 20 });
    const guidance = range("guidance g", { min: 1, max: 12, step: 0.5, value: 7.5 });
    const sampler = choice("sampler", SAMPLER_NAMES, "euler");
    const spacing = choice("spacing", SPACING_NAMES, "linspace");
    const step = range("step i", { min: 0, max: 19, step: 1, value: 19 });
    step.input.disabled = true;
    const x_canvas = pixel_canvas(config.latent_size ?? 8, 96);
    const denoised_canvas = pixel_canvas(config.image_size ?? 32, 96);
    const result_canvas = pixel_canvas(config.image_size ?? 32, 96, "minsd-result");
    const schedule = h("canvas", { width: 240, height: 120, class: "minsd-plot" });
    const caption = h("p", { class: "minsd-caption" }, "");
    const panels = h(
      "div",
      { class: "minsd-panels" },
      figure("x_i (preview)", x_canvas),
      figure("D(x_i; σ_i) (VAE)", denoised_canvas),
      figure("the image x_N", result_canvas),
      figure("the schedule σ_i", schedule),
    );
    let result = null; // the last run's {pixels, sigmas, steps}
    let decoded = []; // D(x_i; sigma_i) decoded, per step, when first shown

    const runner = new Runner(root, async (model, run) => {
      const options = {
        prompt: prompt.value,
        seed: seed.value,
        steps: steps.value,
        guidance: guidance.value,
        sampler: sampler.value,
        spacing: spacing.value,
      };
      const t0 = performance.now();
      result = await minsd.pipeline.generate(model, options, (i, n) => run.on_step(i, n));
      const ms = performance.now() - t0;
      root.minsdResult = { options, ...result, ms };
      decoded = [];
      draw_rgb(result_canvas, result.pixels);
      step.input.max = String(result.steps.length - 1);
      step.set(step.input.max);
      step.input.disabled = false;
      run.say(`${options.steps} steps in ${(ms / 1000).toFixed(2)} s`);
      await show_step(model);
    });

    async function show_step(model) {
      if (result === null) return;
      const i = step.value;
      const { sigma, x, denoised } = result.steps[i];
      const c_in = 1 / (sigma ** 2 + 1) ** 0.5; // x_i / sqrt(sigma_i^2 + 1): what the UNet reads
      const factors = model.data.preview_factors;
      draw_rgb(
        x_canvas,
        minsd.pipeline.latents_to_rgb(
          x.map((v) => c_in * v),
          factors,
        ),
      );
      decoded[i] ??= await model.decode(denoised);
      if (step.value === i) draw_rgb(denoised_canvas, decoded[i]);
      draw_schedule(schedule, result.sigmas, i);
      caption.textContent = `step i = ${i} of N = ${result.steps.length}: σ_i = ${sigma.toFixed(3)}`;
    }

    step.input.addEventListener("input", () => runner.model && show_step(runner.model));
    for (const control of [
      ...prompt.inputs,
      seed.input,
      steps.input,
      guidance.input,
      sampler.input,
      spacing.input,
    ]) {
      control.addEventListener("input", () => runner.request());
    }
    root.append(
      model_note(),
      prompt.root,
      h("div", { class: "minsd-controls" }, seed.root, steps.root, guidance.root),
      h("div", { class: "minsd-controls" }, sampler.root, spacing.root),
      runner.bar,
      panels,
      h("div", { class: "minsd-controls" }, step.root),
      caption,
    );
  }

  // sigma_0 .. sigma_{N-1} against i on a log axis (sigma_N = 0 is off the axis), with a
  // cursor at step i.
  function draw_schedule(canvas, sigmas, i) {
    const context = canvas.getContext("2d");
    const { width, height } = canvas;
    const pad = { left: 34, right: 8, top: 8, bottom: 18 };
    const N = sigmas.length - 1;
    const top = Math.log(20);
    const bottom = Math.log(0.02);
    const px = (k) => pad.left + (k / Math.max(N - 1, 1)) * (width - pad.left - pad.right);
    const py = (s) =>
      pad.top + ((top - Math.log(s)) / (top - bottom)) * (height - pad.top - pad.bottom);
    context.clearRect(0, 0, width, height);
    context.font = "10px sans-serif";
    context.fillStyle = "#555";
    context.strokeStyle = "#ccc";
    for (const s of [10, 1, 0.1]) {
      context.beginPath();
      context.moveTo(pad.left, py(s));
      context.lineTo(width - pad.right, py(s));
      context.stroke();
      context.fillText(String(s), 4, py(s) + 3);
    }
    context.fillText(`step i (0 .. ${N - 1})`, pad.left, height - 4);
    context.strokeStyle = "#d62728";
    context.beginPath();
    context.moveTo(px(i), pad.top);
    context.lineTo(px(i), height - pad.bottom);
    context.stroke();
    context.fillStyle = "#1f77b4";
    for (let k = 0; k < N; k++) {
      context.beginPath();
      context.arc(px(k), py(sigmas[k]), k === i ? 4 : 2, 0, 2 * Math.PI);
      context.fill();
    }
  }

  // -- Image to image ----------------------------------------------------------------------

  function img2img_widget(root) {
    const size = config.image_size ?? 32;
    const palette = { ...vocabulary.colours, ...vocabulary.backgrounds };
    const drawing = pixel_canvas(size, 160, "minsd-drawing");
    const context = drawing.getContext("2d");
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
    const fill = h(
      "button",
      {
        type: "button",
        onclick: () => {
          context.fillStyle = css(colour);
          context.fillRect(0, 0, size, size);
          runner.request();
        },
      },
      "Clear to this colour",
    );
    const prompt = prompt_controls();
    prompt.inputs[1].value = "square";
    prompt.inputs[0].value = "blue";
    const strength = range("strength λ", {
      min: 0.05,
      max: 1,
      step: 0.05,
      value: 0.6,
      show: (v) => v.toFixed(2),
    });
    const steps = range("steps N", { min: 1, max: 50, step: 1, value: 20 });
    const guidance = range("guidance g", { min: 1, max: 12, step: 0.5, value: 7.5 });
    const seed = seed_control();
    const result_canvas = pixel_canvas(size, 160, "minsd-result");
    const caption = h("p", { class: "minsd-caption" }, "");

    // The opening picture: a red disc on black, drawn roughly, as by hand.
    context.fillStyle = css(Object.keys(vocabulary.backgrounds)[0]);
    context.fillRect(0, 0, size, size);
    context.fillStyle = css(Object.keys(vocabulary.colours)[0]);
    context.beginPath();
    context.ellipse(size / 2, size / 2, size * 0.28, size * 0.25, 0.3, 0, 2 * Math.PI);
    context.fill();

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

    const runner = new Runner(root, async (model, run) => {
      const options = {
        prompt: prompt.value,
        seed: seed.value,
        steps: steps.value,
        guidance: guidance.value,
        sampler: "euler",
        spacing: "linspace",
        strength: strength.value,
        init_pixels: read_rgb(drawing),
      };
      try {
        minsd.pipeline.check_strength(options.strength, options.steps);
      } catch (error) {
        run.say(error.message, true); // a pair of values that runs no step: say which
        caption.textContent = "";
        return;
      }
      const t0 = performance.now();
      const result = await minsd.pipeline.generate(model, options, (i, n) => run.on_step(i, n));
      const ms = performance.now() - t0;
      root.minsdResult = { options, ...result, ms };
      draw_rgb(result_canvas, result.pixels);
      const ran = result.sigmas.length - 1;
      const k = options.steps - ran;
      caption.textContent =
        `Started at step k = ${k} of ${options.steps} (σ_k = ${result.sigmas[0].toFixed(3)}) ` +
        `from the drawing's latents plus noise, and ran the last ${ran} Euler steps.`;
      run.say(`${ran} steps in ${(ms / 1000).toFixed(2)} s`);
    });
    for (const control of [
      ...prompt.inputs,
      strength.input,
      steps.input,
      guidance.input,
      seed.input,
    ]) {
      control.addEventListener("input", () => runner.request());
    }
    root.append(
      model_note(),
      h(
        "div",
        { class: "minsd-panels" },
        figure("your drawing", drawing),
        h(
          "div",
          { class: "minsd-tools" },
          h("div", { class: "minsd-swatches" }, ...swatches),
          brush.root,
          fill,
        ),
        figure("image to image", result_canvas),
      ),
      prompt.root,
      h("div", { class: "minsd-controls" }, strength.root, steps.root),
      h("div", { class: "minsd-controls" }, guidance.root, seed.root),
      runner.bar,
      caption,
    );
  }

  // -- The 2-D toy -------------------------------------------------------------------------

  const BLOB_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c"]; // matplotlib's tab:blue, orange, green
  const SIGMA_MAX = 20;
  const N_POINTS = 40;
  const REFERENCE_STEPS = 200;

  // n starting points x(sigma_max) = sigma_max * N(0, I), from a small seeded generator
  // (mulberry32 and Box-Muller): the page draws its own; the book's test hands them to
  // minsd.
  function starting_points(seed, n) {
    let a = seed >>> 0;
    const uniform = () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
    };
    const points = new Float32Array(2 * n);
    for (let p = 0; p < 2 * n; p += 2) {
      const r = Math.sqrt(-2 * Math.log(uniform()));
      const angle = 2 * Math.PI * uniform();
      points[p] = SIGMA_MAX * r * Math.cos(angle);
      points[p + 1] = SIGMA_MAX * r * Math.sin(angle);
    }
    return points;
  }

  function toy_widget(root) {
    const { example_mixture, trajectory } = minsd.toy;
    const { karras_sigmas, sample_euler, sample_heun } = minsd.scheduler;
    const mixture = example_mixture();
    const denoiser = (x, sigma) => mixture.denoise(x, sigma);
    const samplers = { euler: sample_euler, heun: sample_heun };
    const steps = range("steps N", { min: 1, max: 50, step: 1, value: 6 });
    const sampler = choice(
      "sampler",
      [
        ["euler", "Euler"],
        ["heun", "Heun"],
      ],
      "euler",
    );
    // sigma on a log slider: 10^u, u from log10(0.02) to log10(20)
    const sigma = range("σ", {
      min: -1.7,
      max: 1.301,
      step: 0.01,
      value: 0,
      show: (u) => (10 ** u).toFixed(2),
    });
    const seed = range("points", { min: 0, max: 99, step: 1, value: 0 });
    const plane = h("canvas", { width: 300, height: 300, class: "minsd-plot" });
    const against_sigma = h("canvas", { width: 300, height: 300, class: "minsd-plot" });
    const caption = h("p", { class: "minsd-caption" }, "");
    const state = {};

    // The schedule of the chapter: N steps from sigma_max down to exactly 0, eq. (6.2).
    const schedule = (n) => karras_sigmas(n + 1, 0.0, SIGMA_MAX);

    async function update(what) {
      if (what !== "sigma") {
        if (what === "seed" || state.reference === undefined) {
          state.x_start = starting_points(seed.value, N_POINTS);
          state.reference = await trajectory(
            sample_heun,
            denoiser,
            state.x_start,
            schedule(REFERENCE_STEPS),
          );
          const end = state.reference[REFERENCE_STEPS];
          state.blob = Array.from({ length: N_POINTS }, (_, j) => {
            const w = mixture.posterior_weights(end[2 * j], end[2 * j + 1], 0);
            return w.indexOf(Math.max(...w));
          });
        }
        state.sigmas = schedule(steps.value);
        state.path = await trajectory(
          samplers[sampler.value],
          denoiser,
          state.x_start,
          state.sigmas,
        );
      }
      state.sigma = 10 ** sigma.value;
      root.minsdResult = { ...state, n_steps: steps.value, sampler: sampler.value };
      draw_toy(plane, against_sigma, mixture, state);
      const end = state.path[state.path.length - 1];
      const fine = state.reference[REFERENCE_STEPS];
      let error = 0;
      for (let j = 0; j < N_POINTS; j++) {
        error += Math.hypot(end[2 * j] - fine[2 * j], end[2 * j + 1] - fine[2 * j + 1]) / N_POINTS;
      }
      caption.textContent =
        `${sampler.value === "euler" ? "Euler" : "Heun"}, N = ${steps.value} steps (coloured) ` +
        `against ${REFERENCE_STEPS} Heun steps (grey): mean endpoint error ${error.toFixed(3)}. ` +
        `Rings: every path at σ = ${state.sigma.toFixed(2)}.`;
      root.dataset.runs = String(Number(root.dataset.runs ?? 0) + 1);
      root.dataset.state = "done";
    }

    const safely = (what) =>
      update(what).catch((error) => {
        root.dataset.state = "error";
        caption.textContent = `The live figure could not run here: ${error.message}`;
        caption.classList.add("minsd-error");
      });
    steps.input.addEventListener("input", () => safely("steps"));
    sampler.input.addEventListener("input", () => safely("steps"));
    sigma.input.addEventListener("input", () => safely("sigma"));
    seed.input.addEventListener("input", () => safely("seed"));
    root.append(
      h("div", { class: "minsd-panels" }, plane, against_sigma),
      h("div", { class: "minsd-controls" }, steps.root, sampler.root),
      h("div", { class: "minsd-controls" }, sigma.root, seed.root),
      caption,
    );
    safely("seed");
  }

  // Where a path is at noise level sigma: on the straight segment between the two
  // steps around it (exactly where an Euler step would put it).
  function at_sigma(path, sigmas, sigma, j) {
    let i = 0;
    while (i < sigmas.length - 2 && sigmas[i + 1] > sigma) i++;
    const w = Math.min(Math.max((sigmas[i] - sigma) / (sigmas[i] - sigmas[i + 1]), 0), 1);
    return [0, 1].map((c) => (1 - w) * path[i][2 * j + c] + w * path[i + 1][2 * j + c]);
  }

  function draw_toy(plane, against_sigma, mixture, state) {
    const lim = 6;
    const n_ref = state.reference.length;
    const ref_sigmas = minsd.scheduler.karras_sigmas(n_ref, 0.0, SIGMA_MAX);
    // The plane: p(x; sigma) shaded, the reference paths, the sampler's paths, and every
    // path's point at sigma.
    const ctx = plane.getContext("2d");
    const W = plane.width;
    const to_px = (v) => ((v + lim) / (2 * lim)) * W;
    // p(x; sigma) on a coarse grid, scaled up smoothly; about 1 at the peaks
    const n = 100;
    const density = h("canvas", { width: n, height: n });
    const shade = density.getContext("2d").createImageData(n, n);
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < n; c++) {
        const x = ((c + 0.5) / n) * 2 * lim - lim;
        const y = lim - ((r + 0.5) / n) * 2 * lim;
        const p = Math.exp(mixture.log_density(x, y, state.sigma));
        const v = Math.round(255 * (1 - Math.min(1, p * (state.sigma ** 2 + 0.3) * 6)));
        shade.data.set([v, v, 255, 255], 4 * (r * n + c));
      }
    }
    density.getContext("2d").putImageData(shade, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(density, 0, 0, W, W);
    const line = (points, color, width) => {
      ctx.strokeStyle = color;
      ctx.lineWidth = width;
      ctx.beginPath();
      points.forEach(([x, y], k) =>
        k ? ctx.lineTo(to_px(x), to_px(-y)) : ctx.moveTo(to_px(x), to_px(-y)),
      );
      ctx.stroke();
    };
    const xy = (path, j) => path.map((x) => [x[2 * j], x[2 * j + 1]]);
    for (let j = 0; j < N_POINTS; j++) line(xy(state.reference, j), "#bbb", 1);
    for (let j = 0; j < N_POINTS; j++) {
      const color = BLOB_COLORS[state.blob[j]];
      line(xy(state.path, j), color, 1.2);
      ctx.fillStyle = color;
      for (const [x, y] of xy(state.path, j)) ctx.fillRect(to_px(x) - 1.5, to_px(-y) - 1.5, 3, 3);
      const [x, y] = at_sigma(state.path, state.sigmas, state.sigma, j);
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      ctx.arc(to_px(x), to_px(-y), 4, 0, 2 * Math.PI);
      ctx.stroke();
    }
    ctx.fillStyle = "#000";
    ctx.font = "11px sans-serif";
    ctx.fillText(`the plane, ±${lim}; shading p(x; σ = ${state.sigma.toFixed(2)})`, 6, 14);

    // The first coordinate against sigma, on a log axis decreasing to the right.
    const c2 = against_sigma.getContext("2d");
    const H = against_sigma.height;
    const s_lo = Math.log(0.01);
    const s_hi = Math.log(SIGMA_MAX);
    const sx = (s) => 30 + ((s_hi - Math.log(Math.max(s, 0.01))) / (s_hi - s_lo)) * (W - 56);
    const sy = (v) => H / 2 - (v / 8) * (H / 2 - 20);
    c2.clearRect(0, 0, W, H);
    c2.fillStyle = "#555";
    c2.font = "10px sans-serif";
    for (const s of [10, 1, 0.1, 0.01]) c2.fillText(String(s), sx(s) - 6, H - 4);
    c2.fillText("σ", W - 12, H - 4);
    for (const v of [-5, 0, 5]) c2.fillText(String(v), 4, sy(v) + 3);
    const curve = (path, sigmas, j, color, width) => {
      c2.strokeStyle = color;
      c2.lineWidth = width;
      c2.beginPath();
      path.forEach((x, i) =>
        i ? c2.lineTo(sx(sigmas[i]), sy(x[2 * j])) : c2.moveTo(sx(sigmas[i]), sy(x[2 * j])),
      );
      c2.stroke();
    };
    for (let j = 0; j < N_POINTS; j++) curve(state.reference, ref_sigmas, j, "#ccc", 1);
    for (let j = 0; j < N_POINTS; j++)
      curve(state.path, state.sigmas, j, BLOB_COLORS[state.blob[j]], 1.2);
    c2.strokeStyle = "#d62728";
    c2.lineWidth = 1;
    c2.beginPath();
    c2.moveTo(sx(state.sigma), 18);
    c2.lineTo(sx(state.sigma), H - 16);
    c2.stroke();
    c2.fillStyle = "#000";
    c2.font = "11px sans-serif";
    c2.fillText("first coordinate x₁ against σ (log, decreasing →)", 6, 14);
  }

  // -- Start ---------------------------------------------------------------------------------

  const WIDGETS = { loop: loop_widget, img2img: img2img_widget, toy: toy_widget };

  function start() {
    for (const root of document.querySelectorAll(".minsd-live[data-widget]")) {
      const make = WIDGETS[root.dataset.widget];
      if (make === undefined || root.dataset.started) continue;
      root.dataset.started = "true";
      try {
        make(root);
      } catch (error) {
        root.dataset.state = "error";
        root.append(
          h("p", { class: "minsd-error" }, `This live widget could not start: ${error.message}`),
        );
      }
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  minsd.widgets = { start, starting_points };
})();
