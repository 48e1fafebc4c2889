// Chapter 7's widget, data-widget="loop": the whole sampling loop of
// minsd.StableDiffusion.generate with the default model. Prompt, seed, steps N,
// guidance g, sampler and spacing pick the run; a slider over step i shows what the
// UNet reads there (c_in x_i, a preview of the latents), the denoiser's guess
// D(x_i; sigma_i) decoded, the image x_N and the schedule. A guided tour (tour.js)
// walks through chapter 7's ideas on it.
//
// It opens on minsd's own run for its opening controls (minsd/live.py, LOOP_DEFAULTS),
// every step of it, drawn when the book was built; the model loads when the reader
// runs something else.
//
// A classic script (a page opened from disk may not import modules).
"use strict";
(() => {
  const minsd = (globalThis.minsd ??= {});
  const { config, h, range, choice, pixel_canvas, draw_rgb, rgb_frames, figure } = minsd.ui;
  const { get_sigmas } = minsd.scheduler;
  const { vp_coefficients } = minsd.denoiser;

  // The guided tour (tour.js): the state and the estimate, one step, colour before
  // shape, few steps and many, guidance, the sampler. Each card's claim is checked by
  // tests/test_live.py against what the widget draws.
  const tour_cards = (defaults, step) => [
    {
      title: "the state and the estimate",
      set: { ...defaults, step },
      look: "denoised",
      text:
        "Step i = 10 of 20, σ_i ≈ 1.5: the state x_i (left) still carries noise of " +
        "size σ_i, yet the estimate D(x_i; σ_i) (middle) already shows the red circle " +
        "of the image (right). The last ten steps only sharpen it.",
    },
    {
      title: "one step",
      set: { ...defaults, steps: 1, step: 0 },
      look: "image",
      ask: "N = 1: one Euler step, from σ₀ ≈ 14.6 straight to 0. What will the image be?",
      choices: ["noise", "a blurred red circle", "the first estimate D(x₀; σ₀)"],
      answer: 2,
      text:
        "x₁ = x₀ + (0 − σ₀)(x₀ − D)/σ₀ = D(x₀; σ₀): the image is the middle panel of " +
        "step 0, a dark blur with no shape yet.",
    },
    {
      title: "colour first, then shape",
      set: { ...defaults, step: 2 },
      look: "step",
      text:
        "Drag step i: the estimate is red from step 2 (σ ≈ 8) on, but a circle only " +
        "from step 8 (σ ≈ 2). Colour is settled at high noise, shape in the middle, " +
        "and the last steps only sharpen it.",
    },
    {
      title: "few steps",
      set: { ...defaults, steps: 4, step: 3 },
      look: "image",
      ask: "N = 4: four Euler steps instead of twenty. Will the loop still draw the circle?",
      choices: ["yes, a little softer", "no, no shape at all"],
      answer: 1,
      text:
        "Four steps this long end on a dark blur with no shape: each step follows the " +
        "ODE's slope at its start, and these steps are too long to follow it.",
    },
    {
      title: "enough steps",
      set: { ...defaults, steps: 8, step: 7 },
      look: "image",
      text:
        "Eight Euler steps already draw the red circle, a little softer than twenty " +
        "(within 30/255 RMS of the 20-step image).",
    },
    {
      title: "no guidance",
      set: { ...defaults, guidance: 1, step: 0 },
      look: "denoised",
      text:
        "With g = 1 the first estimate D(x₀; σ₀) is already a red shape, where g = 7.5 " +
        "gave a dark square: guidance pushes the early estimates past what the decoder " +
        "knows. The circle it ends on is smaller than with guidance.",
    },
    {
      title: "the sampler",
      set: { ...defaults, sampler: "dpmpp_2m", spacing: "karras", step: 19 },
      look: "image",
      ask:
        "DPM++ 2M on the Karras schedule, also 20 steps. Whose image lies closer to " +
        "where 50 DPM++ 2M steps land?",
      choices: ["Euler's, the opening one", "DPM++ 2M's"],
      answer: 1,
      text:
        "Its image is within 1/255 (RMS) of the 50-step one, Euler's 20 " +
        "linspace steps about 9/255 from it, though the two look alike. Chapter 9 " +
        "measures samplers this way.",
    },
  ];

  function loop_widget(root) {
    const first = config.first.loop; // minsd's run for the opening controls
    const defaults = first.defaults;
    const sigma_table = minsd.ui.sigma_table();
    const prompt = minsd.ui.prompt_controls();
    const seed = minsd.ui.seed_control();
    const steps = range("steps N", { min: 1, max: 50, step: 1, value: defaults.steps });
    const guidance = range("guidance g", { min: 1, max: 12, step: 0.5, value: defaults.guidance });
    const sampler = choice("sampler", config.samplers, defaults.sampler);
    const spacing = choice("spacing", config.spacings, defaults.spacing);
    const step = range("step i", { min: 0, max: defaults.steps - 1, step: 1, value: first.step });
    prompt.set(defaults.prompt);
    seed.set(defaults.seed);
    const x_canvas = pixel_canvas(config.latent_size);
    const denoised_canvas = pixel_canvas(config.image_size);
    const image_canvas = pixel_canvas(config.image_size, "minsd-result");
    const schedule = h("canvas", { width: 600, height: 160, class: "minsd-plot minsd-strip" });
    const caption = h("p", { class: "minsd-caption" }, "");
    const runner = new minsd.ui.Runner(root, compute);
    // The step slider as a control: a step past the shown run's last one is kept for
    // the run that has it (a tour's card sets N and i at once).
    let asked_step = null;
    const step_control = {
      root: step.root,
      input: step.input,
      set(v) {
        asked_step = v;
        step.set(v);
      },
      get value() {
        return step.value;
      },
    };
    const controls = { prompt, seed, steps, guidance, sampler, spacing, step: step_control };
    const parts = {
      x: figure("c_in x_i, the UNet's input (preview)", x_canvas),
      denoised: figure("D(x_i; σ_i), decoded", denoised_canvas),
      image: figure("the image, x_N decoded", image_canvas),
      schedule: figure("the schedule σ_i", schedule),
      step: step.root,
    };

    const options = () => ({
      prompt: prompt.value,
      seed: seed.value,
      steps: steps.value,
      guidance: guidance.value,
      sampler: sampler.value,
      spacing: spacing.value,
    });
    const hw = config.image_size ** 2;
    // The shown run: {options, sigmas, pixels, steps, previews, decoded}; previews
    // and decoded are filled per step when first shown (the build's: all of them).
    let result = {
      options: { ...defaults },
      sigmas: get_sigmas(sigma_table, defaults.steps, defaults.spacing),
      pixels: rgb_frames(first.pixels, 3 * hw)[0],
      steps: null,
      previews: rgb_frames(first.previews, 3 * config.latent_size ** 2),
      decoded: rgb_frames(first.decoded, 3 * hw),
      prerendered: true,
    };

    async function compute(model, run) {
      const asked = options();
      const t0 = performance.now();
      const out = await minsd.pipeline.generate(model, asked, (i, n) => run.on_step(i, n));
      const ms = performance.now() - t0;
      result = { options: asked, ...out, previews: [], decoded: [], ms };
      run.say(`${asked.steps} steps in ${(ms / 1000).toFixed(2)} s`);
      await show(model);
    }

    async function show(model) {
      root.minsdResult = result;
      draw_rgb(image_canvas, result.pixels);
      const last = result.sigmas.length - 2;
      step.input.max = String(last);
      step.set(Math.min(asked_step ?? step.value, last));
      asked_step = null;
      await show_step(model);
    }

    // Step i of the shown run: c_in x_i previewed, D(x_i; sigma_i) decoded (once).
    async function show_step(model) {
      const shown = result;
      const i = step.value;
      const sigma = shown.sigmas[i];
      if (shown.previews[i] === undefined) {
        const c_in = vp_coefficients(sigma, sigma_table)[2]; // eq. (3.4)
        const x_in = shown.steps[i].x.map((v) => c_in * v);
        shown.previews[i] = minsd.pipeline.latents_to_rgb(x_in, model.data.preview_factors);
      }
      draw_rgb(x_canvas, shown.previews[i]);
      draw_schedule(schedule, shown.sigmas, i);
      shown.decoded[i] ??= await model.decode(shown.steps[i].denoised);
      if (step.value !== i || result !== shown) return; // moved on meanwhile
      draw_rgb(denoised_canvas, shown.decoded[i]);
      const N = shown.sigmas.length - 1;
      caption.textContent = `step i = ${i} of N = ${N}: σ_i = ${sigma.toFixed(3)}`;
    }

    // The API's run: a new run if the controls ask for another image, else the step.
    async function run() {
      const asked = options();
      const same = Object.keys(asked).every((k) => asked[k] === result.options[k]);
      if (same) {
        asked_step = null;
        await show_step(runner.model);
      } else await runner.request();
      return result;
    }

    step.input.addEventListener("input", () => {
      asked_step = null;
      show_step(runner.model);
    });
    for (const control of [prompt, seed, steps, guidance, sampler, spacing]) {
      for (const input of control.inputs ?? [control.input]) {
        input.addEventListener("input", () => runner.request());
      }
    }
    const widget = minsd.ui.widget_api(root, controls, parts, run);
    root.append(
      minsd.ui.model_note(),
      prompt.root,
      h("div", { class: "minsd-controls" }, seed.root, steps.root, guidance.root),
      h("div", { class: "minsd-controls" }, sampler.root, spacing.root),
      runner.bar,
      minsd.tour(widget, tour_cards(defaults, first.step)),
      h("div", { class: "minsd-panels minsd-three" }, parts.x, parts.denoised, parts.image),
      h("div", { class: "minsd-controls" }, step.root, caption),
      parts.schedule,
    );
    runner.say(minsd.ui.first_result_note());
    show(null);
    return widget;
  }

  // sigma_0 .. sigma_{N-1} against i on a log axis (sigma_N = 0 is off the axis), with a
  // cursor at step i.
  function draw_schedule(canvas, sigmas, i) {
    const context = canvas.getContext("2d");
    const { width, height } = canvas;
    const pad = { left: 34, right: 10, top: 10, bottom: 20 };
    const N = sigmas.length - 1;
    const top = Math.log(20);
    const bottom = Math.log(0.02);
    const px = (k) => pad.left + (k / Math.max(N - 1, 1)) * (width - pad.left - pad.right);
    const py = (s) =>
      pad.top + ((top - Math.log(s)) / (top - bottom)) * (height - pad.top - pad.bottom);
    context.fillStyle = "#fff";
    context.fillRect(0, 0, width, height);
    context.font = "12px sans-serif";
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

  (minsd.widgets ??= {}).loop = loop_widget;
})();
