// Chapter 2's widget, data-widget="toy": sampler paths on the 2-D mixture of
// minsd.toy, whose denoiser is exact, beside a fine reference; the cloud at any noise
// level sigma. No model to load: it computes on load.
//
// It measures as chapter 2 does: the starting points are minsd.toy.starting_points(seed)
// (40 points, sigma_max 20, from torch's generator: the build writes them for the
// offered seeds, a JavaScript generator cannot reproduce torch's), the schedule is
// karras_sigmas(N + 1, 0, 20), the reference sample_heun with 400 steps on it, and the
// mean error is the mean over the points of the Euclidean distance between endpoints.
//
// A classic script (a page opened from disk may not import modules).
"use strict";
(() => {
  const minsd = (globalThis.minsd ??= {});
  const { config, h, range, choice } = minsd.ui;

  const BLOB_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c"]; // matplotlib's tab:blue, orange, green

  // What to try and what to notice; true for every offered seed. Each claim is checked
  // by tests/test_live.py against what the widget computes.
  const tries = [
    {
      label: "N = 1",
      set: { sampler: "euler", steps: 1 },
      look: "plane",
      text:
        "One step from σ = 20 lands on D(x; 20), near the average of the data: all 40 " +
        "paths end within 0.6 of the data's mean (−0.4, −0.4), between the blobs, none " +
        "nearer than 1 to a blob's centre.",
    },
    {
      label: "N = 4",
      set: { sampler: "euler", steps: 4 },
      look: "caption",
      text:
        "Four Euler steps end farther from the reference than three: with few steps the " +
        "error jumps about; from N = 8 on, every step added makes it smaller.",
    },
    {
      label: "Heun, N = 2",
      set: { sampler: "heun", steps: 2 },
      look: "plane",
      text:
        "Heun's correction uses the slope at σ₁ = 0.16, where the Euler guess sits " +
        "between the blobs: the points fly off (mean error near 20). At N = 20 its " +
        "error is under half of Euler's.",
    },
  ];

  function toy_widget(root) {
    const first = config.first.toy;
    const { example_mixture, trajectory } = minsd.toy;
    const { karras_sigmas } = minsd.scheduler;
    const { SAMPLERS } = minsd.pipeline;
    const mixture = example_mixture();
    const denoiser = (x, sigma) => mixture.denoise(x, sigma);
    const n_points = first.num_points;
    const points = new Float64Array(minsd.runtime.base64_bytes(first.starting_points).buffer);
    const steps = range("steps N", { min: 1, max: 50, step: 1, value: 4 });
    const sampler = choice("sampler", config.samplers, "euler");
    // sigma on a log slider: 10^u, u from log10(0.02) to log10(20)
    const sigma = range("σ", {
      min: -1.7,
      max: 1.301,
      step: 0.01,
      value: 0,
      show: (u) => (10 ** u).toFixed(2),
    });
    const seed = range("seed", { min: 0, max: first.num_seeds - 1, step: 1, value: 0 });
    const plane = h("canvas", { width: 300, height: 300, class: "minsd-plot" });
    const against_sigma = h("canvas", { width: 300, height: 300, class: "minsd-plot" });
    const caption = h("p", { class: "minsd-caption" }, "");
    const controls = { steps, sampler, sigma, seed };
    const parts = { plane, against_sigma, caption };
    const state = {};

    // Chapter 2's schedule: N steps from sigma_max down to exactly 0, eq. (6.2).
    const schedule = (n) => karras_sigmas(n + 1, 0.0, first.sigma_max);

    async function update() {
      if (state.seed !== seed.value) {
        state.seed = seed.value;
        const start = 2 * n_points * seed.value;
        state.x_start = points.slice(start, start + 2 * n_points); // (n, 2), float64
        state.reference_sigmas = schedule(first.reference_steps);
        state.reference = await trajectory(
          minsd.scheduler.sample_heun,
          denoiser,
          state.x_start,
          state.reference_sigmas,
        );
        const end = state.reference[first.reference_steps];
        state.blob = Array.from({ length: n_points }, (_, j) => {
          const w = mixture.posterior_weights(end[2 * j], end[2 * j + 1], 0);
          return w.indexOf(Math.max(...w));
        });
      }
      if (state.n_steps !== steps.value || state.sampler !== sampler.value) {
        state.n_steps = steps.value;
        state.sampler = sampler.value;
        state.sigmas = schedule(steps.value);
        const solver = SAMPLERS[sampler.value];
        state.path = await trajectory(solver, denoiser, state.x_start, state.sigmas);
      }
      state.sigma = 10 ** sigma.value;
      // The mean over the points of |x_N - x_N(reference)|, as chapter 2 measures.
      const end = state.path[state.path.length - 1];
      const fine = state.reference[first.reference_steps];
      let error = 0;
      for (let j = 0; j < n_points; j++) {
        error += Math.hypot(end[2 * j] - fine[2 * j], end[2 * j + 1] - fine[2 * j + 1]);
      }
      state.error = error / n_points;
      root.minsdResult = { ...state };
      draw_toy(plane, against_sigma, mixture, state);
      caption.textContent =
        `${sampler.value}, N = ${steps.value} steps (coloured) against ` +
        `${first.reference_steps} Heun steps (grey): mean error ` +
        `${state.error.toFixed(3)}. Rings: every path at σ = ${state.sigma.toFixed(2)}.`;
      root.dataset.runs = String(Number(root.dataset.runs ?? 0) + 1);
      root.dataset.state = "done";
      return root.minsdResult;
    }

    // One update at a time, in order: each reads the state the one before left.
    let queue = Promise.resolve();
    const run = () =>
      (queue = queue.then(update).catch((error) => {
        root.dataset.state = "error";
        caption.textContent = `The live figure could not run here: ${error.message}`;
        caption.classList.add("minsd-error");
      }));
    for (const control of Object.values(controls)) control.input.addEventListener("input", run);
    const widget = minsd.ui.widget_api(root, controls, parts, run);
    root.append(
      h("div", { class: "minsd-panels" }, plane, against_sigma),
      h("div", { class: "minsd-controls" }, steps.root, sampler.root),
      h("div", { class: "minsd-controls" }, sigma.root, seed.root),
      caption,
      minsd.ui.try_this(widget, tries),
    );
    run();
    return widget;
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
    const n_points = state.x_start.length / 2;
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
    for (let j = 0; j < n_points; j++) line(xy(state.reference, j), "#bbb", 1);
    for (let j = 0; j < n_points; j++) {
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
    const s_hi = Math.log(state.reference_sigmas[0]);
    const sx = (s) => 30 + ((s_hi - Math.log(Math.max(s, 0.01))) / (s_hi - s_lo)) * (W - 56);
    const sy = (v) => H / 2 - (v / 8) * (H / 2 - 20);
    c2.fillStyle = "#fff";
    c2.fillRect(0, 0, W, H);
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
    for (let j = 0; j < n_points; j++) curve(state.reference, state.reference_sigmas, j, "#ccc", 1);
    for (let j = 0; j < n_points; j++)
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

  (minsd.widgets ??= {}).toy = toy_widget;
})();
