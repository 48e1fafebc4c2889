// Chapter 9's widget, data-widget="compare": two samplers side by side, on one prompt
// and seed. Each column has its own sampler, spacing, steps N and guidance g, and
// shows its image, the denoiser evaluations it spent (NFE, counted as chapter 9's
// `solve` counts them) and its latent distance (chapter 9's measure: the RMS of the
// difference of the final latents) to a reference the page can afford: 100 DPM++ 2M
// steps on the Karras schedule, for the same prompt, seed and g, computed in the page
// once and kept (minsd/live.py, COMPARE_REFERENCE). "Equal cost" puts Euler at N
// beside Heun at (N + 1) / 2 steps, which spend 2 (N + 1) / 2 - 1 = N evaluations.
//
// It opens on minsd's result for its opening controls (minsd/live.py,
// COMPARE_DEFAULTS), with the reference's latents, drawn when the book was built.
//
// A classic script (a page opened from disk may not import modules).
"use strict";
(() => {
  const minsd = (globalThis.minsd ??= {});
  const { config, h, range, choice, pixel_canvas, draw_rgb, rgb_frames, figure } = minsd.ui;

  // Chapter 9's latent distance: the RMS, over all values, of latents - reference.
  function latent_distance(latents, reference) {
    let sum = 0;
    for (let j = 0; j < latents.length; j++) sum += (latents[j] - reference[j]) ** 2;
    return Math.sqrt(sum / latents.length);
  }

  // generate's result and its NFE: each call of the denoiser D(x; sigma), guided or
  // not, counted, as chapter 9's `solve` counts them (minsd.live.compare_run).
  async function compare_run(model, options, on_step) {
    let nfe = 0;
    const denoiser = {
      sigma_table: model.denoiser.sigma_table,
      forward(...inputs) {
        nfe += 1;
        return model.denoiser.forward(...inputs);
      },
    };
    const result = await minsd.pipeline.generate({ ...model, denoiser }, options, on_step);
    return { ...result, nfe };
  }

  // A button that is on or off (aria-pressed); on_change(value) when set.
  function toggle(label, on_change) {
    const button = h("button", { type: "button", class: "minsd-toggle" }, label);
    const control = {
      root: button,
      input: button,
      set(value) {
        button.setAttribute("aria-pressed", String(Boolean(value)));
        on_change(Boolean(value));
      },
      get value() {
        return button.getAttribute("aria-pressed") === "true";
      },
    };
    button.addEventListener("click", () => control.set(!control.value));
    button.setAttribute("aria-pressed", "false");
    return control;
  }

  // What to try and what to notice, from the opening controls (all of them set, so
  // that a line reads the same whatever came before). Each claim is checked by
  // tests/test_live.py against what the widget computes.
  const tries = (opening) => [
    {
      label: "N = 10 each",
      set: { ...opening, steps_a: 10, steps_b: 10 },
      look: "distance_a",
      text:
        "Half the steps: Euler's latents now lie about 20 times farther from the " +
        "reference than DPM++ 2M's. Fewer steps cost the first-order method far more.",
    },
    {
      label: "Equal cost",
      set: { ...opening, equal_cost: true, spacing_a: "karras", steps_a: 19 },
      look: "distance_b",
      text:
        "Euler with 19 steps beside Heun with 10 on the Karras schedule, 19 " +
        "evaluations each: Heun lands about four times closer.",
    },
    {
      label: "g = 1",
      set: { ...opening, guidance_a: 1, guidance_b: 1 },
      look: "distance_a",
      text:
        "Without guidance Euler's distance falls from 0.23 to about 0.01: guidance 7.5 " +
        "makes the ODE much harder to follow.",
    },
  ];

  // One column's controls, picture and measures.
  function column(name, defaults) {
    const sampler = choice("sampler", config.samplers, defaults.sampler);
    const spacing = choice("spacing", config.spacings, defaults.spacing);
    const steps = range("steps N", { min: 1, max: 50, step: 1, value: defaults.steps });
    const guidance = range("guidance g", { min: 1, max: 12, step: 0.5, value: defaults.guidance });
    const canvas = pixel_canvas(config.image_size, "minsd-result");
    const nfe = h("span", { class: "minsd-nfe" }, "");
    const distance = h("span", { class: "minsd-distance" }, "");
    const image = figure(`column ${name}`, canvas);
    const measures = h("p", { class: "minsd-measures" }, nfe, h("br"), distance);
    const root = h("div", { class: "minsd-column" }, sampler.root, spacing.root);
    root.append(steps.root, guidance.root, image, measures);
    return { name, sampler, spacing, steps, guidance, canvas, nfe, distance, image, root };
  }

  function compare_widget(root) {
    const first = config.first.compare; // minsd's result for the opening controls
    const defaults = first.defaults;
    const size = 3 * config.image_size ** 2;
    const prompt = minsd.ui.prompt_controls();
    prompt.set(defaults.prompt);
    const seed = minsd.ui.seed_control();
    seed.set(defaults.seed);
    const columns = [column("A", defaults.columns[0]), column("B", defaults.columns[1])];
    const [a, b] = columns;
    const equal_cost = toggle("Equal cost: Euler N, Heun (N + 1)/2", follow);
    const references_shown = h("div", { class: "minsd-references" });
    const controls = { prompt, seed, equal_cost };
    const parts = { references: references_shown };
    for (const c of columns) {
      const n = c.name.toLowerCase();
      Object.assign(controls, {
        [`sampler_${n}`]: c.sampler,
        [`spacing_${n}`]: c.spacing,
        [`steps_${n}`]: c.steps,
        [`guidance_${n}`]: c.guidance,
      });
      Object.assign(parts, { [`column_${n}`]: c.root, [`image_${n}`]: c.image });
      parts[`distance_${n}`] = c.distance;
    }

    // Equal cost: B is Heun at (N + 1)/2 steps on A's spacing and g, A is Euler at an
    // odd N; B's controls follow A's.
    function follow(on = equal_cost.value) {
      for (const c of [a.sampler, b.sampler, b.spacing, b.steps, b.guidance]) {
        c.input.disabled = on;
      }
      const n = a.steps.value % 2 === 1 ? a.steps.value : a.steps.value - 1;
      a.steps.input.step = on ? "2" : "1"; // 1, 3, 5, ...: N = 2M - 1
      if (!on) return;
      a.sampler.set("euler");
      a.steps.set(n);
      b.sampler.set("heun");
      b.spacing.set(a.spacing.value);
      b.guidance.set(a.guidance.value);
      b.steps.set((n + 1) / 2);
    }

    const options = (c) => ({
      prompt: prompt.value,
      seed: seed.value,
      sampler: c.sampler.value,
      spacing: c.spacing.value,
      steps: c.steps.value,
      guidance: c.guidance.value,
    });
    const same = (x, y) => Object.keys(x).every((k) => x[k] === y[k]);
    const reference_key = (o) => JSON.stringify([o.prompt, o.seed, o.guidance]);
    const { sampler, spacing, steps } = first.reference; // the reference's settings
    const reference_options = (o) => ({ ...o, sampler, spacing, steps });
    // The references computed so far, by prompt, seed and g: {latents, pixels, nfe}.
    const references = new Map();
    const built = reference_options(options(a)); // the build's, for the opening
    references.set(reference_key(built), {
      options: built,
      latents: new Float32Array(minsd.runtime.base64_bytes(first.reference.latents).buffer),
      pixels: rgb_frames(first.reference.pixels, size)[0],
      nfe: steps,
    });
    // The shown result: per column {options, pixels, nfe, distance}.
    let result = {
      columns: columns.map((c, k) => ({
        options: options(c),
        pixels: rgb_frames(first.columns[k].pixels, size)[0],
        nfe: first.columns[k].nfe,
        distance: first.columns[k].distance,
      })),
      prerendered: true,
    };

    function draw(k, shown) {
      const c = columns[k];
      draw_rgb(c.canvas, shown.pixels);
      c.nfe.textContent = `${shown.nfe} UNet evaluations (NFE)`;
      c.distance.textContent =
        shown.distance === null
          ? "latent distance: ..."
          : `latent distance ${shown.distance.toFixed(3)}`;
    }

    // The reference pictures, one for each g the columns use.
    function draw_references() {
      const shown = new Map(result.columns.map((r) => [reference_key(r.options), r.options]));
      references_shown.replaceChildren();
      for (const [key, o] of shown) {
        const canvas = pixel_canvas(config.image_size);
        const reference = references.get(key);
        if (reference) draw_rgb(canvas, reference.pixels);
        references_shown.append(figure(`the reference for g = ${o.guidance}`, canvas));
      }
    }

    // Run the columns whose controls changed, then the references they need, then
    // measure.
    async function compute(model, run) {
      if (equal_cost.value) follow();
      const next = result.columns.slice();
      const said = []; // what took how long, for the status line
      const t_start = performance.now();
      for (const [k, c] of columns.entries()) {
        const asked = options(c);
        if (same(asked, next[k].options)) continue;
        const t0 = performance.now();
        const on_step = (i, n) => {
          run.progress.value = (i + 1) / n;
          run.say(`column ${c.name}: step ${i + 1} of ${n}`);
        };
        const out = await compare_run(model, asked, on_step);
        said.push(`${c.name} in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
        next[k] = { options: asked, ...out, distance: null };
        draw(k, next[k]);
      }
      for (const shown of next) {
        const key = reference_key(shown.options);
        if (!references.has(key)) {
          const asked = reference_options(shown.options);
          run.say(`the reference for g = ${asked.guidance}: ${asked.steps} DPM++ 2M steps`);
          const t0 = performance.now();
          const out = await compare_run(model, asked, (i, n) => run.on_step(i, n));
          references.set(key, { options: asked, ...out });
          said.push(`a reference in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
        }
        shown.distance ??= latent_distance(shown.latents, references.get(key).latents);
      }
      result = { columns: next, ms: performance.now() - t_start };
      root.minsdResult = result;
      next.forEach((shown, k) => draw(k, shown));
      draw_references();
      run.say(`Computed ${said.join(", ")}.`);
    }

    const runner = new minsd.ui.Runner(root, compute);

    // The API's run: a new run unless the shown results are for these controls.
    async function run() {
      if (equal_cost.value) follow();
      const fresh = columns.every((c, k) => same(options(c), result.columns[k].options));
      if (!fresh) await runner.request();
      return result;
    }

    const inputs = [...prompt.inputs, seed.input, equal_cost.input];
    for (const c of columns) {
      inputs.push(c.sampler.input, c.spacing.input, c.steps.input, c.guidance.input);
    }
    for (const input of inputs) {
      input.addEventListener(input === equal_cost.input ? "click" : "input", () =>
        runner.request(),
      );
    }
    const widget = minsd.ui.widget_api(root, controls, parts, run);
    const metric = h(
      "p",
      { class: "minsd-note" },
      "Latent distance: the RMS of the difference between a column's final latents and " +
        `the reference's, DPM++ 2M with ${steps} steps on the Karras ` +
        "schedule for the same prompt, seed and g, computed once in your browser and " +
        "kept. The chapter's reference is finer: 512 steps, in float64.",
    );
    const opening = { prompt: defaults.prompt, seed: defaults.seed, equal_cost: false };
    for (const [k, c] of columns.entries()) {
      for (const [name, value] of Object.entries(defaults.columns[k])) {
        opening[`${name}_${c.name.toLowerCase()}`] = value;
      }
    }
    root.append(
      minsd.ui.model_note(),
      prompt.root,
      h("div", { class: "minsd-controls" }, seed.root, equal_cost.root),
      h("div", { class: "minsd-columns" }, a.root, b.root, references_shown),
      runner.bar,
      metric,
      minsd.ui.try_this(widget, tries(opening)),
    );
    root.minsdResult = result;
    result.columns.forEach((shown, k) => draw(k, shown));
    draw_references();
    runner.say(minsd.ui.first_result_note());
    return widget;
  }

  (minsd.widgets ??= {}).compare = compare_widget;
  minsd.compare = { latent_distance, compare_run };
})();
