// Chapter 11's widget, data-widget="attention": where the UNet reads each token of the
// reader's prompt. A run generates the image as minsd.StableDiffusion.generate does
// (chapter 11's 20 Euler steps with guidance 7.5) on the UNet that also hands out its
// cross-attention maps (minsd/live.py, UNetWithMaps), and records them as
// minsd/attention_maps.py does; a slider over step i and a menu of levels then show
// each token's map M_j(p), eq. (xattn-map), averaged over the level's layers, drawn as
// its departure from its own mean, R_j(p) = 100 (M_j(p) / mean_p M_j - 1) %, red above
// and blue below, with the final image's shape outlined.
//
// It opens on minsd's maps for chapter 11's prompt (minsd/live.py, ATTENTION_DEFAULTS),
// every step and level, drawn when the book was built; the model loads when the reader
// runs another prompt or seed.
//
// A classic script (a page opened from disk may not import modules).
"use strict";
(() => {
  const minsd = (globalThis.minsd ??= {});
  const { config, h, range, choice, pixel_canvas, draw_rgb, rgb_frames, figure } = minsd.ui;
  const { get_sigmas } = minsd.scheduler;
  const { Denoiser, scaled_linear_alphas_cumprod } = minsd.denoiser;

  // attention_maps.py's layer_size: the (h_l, w_l) of a layer with n_positions, (h, w)
  // halved k times, rounded up.
  function layer_size(h, w, n_positions) {
    let [h_l, w_l] = [h, w];
    for (let k = 0; k < 8; k++) {
      if (h_l * w_l === n_positions) return [h_l, w_l];
      [h_l, w_l] = [Math.ceil(h_l / 2), Math.ceil(w_l / 2)];
    }
    throw new RangeError(`no level of a ${h} x ${w} latent has ${n_positions} positions`);
  }

  // attention_maps.py's recording_cross_attention, for the page's model: the model
  // again, with a denoiser whose UNet calls also record, for every attn2 layer, the
  // maps of the conditional half (the last sample): {layer: [(N_l, T) per call]}.
  function recording_cross_attention(model) {
    const recorded = {};
    async function unet(x, t, context) {
      const { eps, ...maps } = await model.unet_maps(x, t, context); // maps: (2, N_l, T)
      for (const [name, probs] of Object.entries(maps)) {
        (recorded[name] ??= []).push(probs.slice(probs.length / 2));
      }
      return eps;
    }
    const { beta_start, beta_end, num_train_timesteps } = model.data;
    const alphas_cumprod = scaled_linear_alphas_cumprod(beta_start, beta_end, num_train_timesteps);
    const denoiser = new Denoiser(unet, alphas_cumprod, 2);
    return [{ ...model, denoiser }, recorded];
  }

  // attention_maps.py's cross_attention_maps: generate while recording. maps: {layer:
  // [(T, N_l) per call]}, sizes: {layer: [h_l, w_l]}, and the generation.
  async function cross_attention_maps(model, options, on_step) {
    const [recording, recorded] = recording_cross_attention(model);
    const generation = await minsd.pipeline.generate(recording, options, on_step);
    const [, h, w] = model.data.latent_shape;
    const T = model.data.text_shape[0];
    const maps = {};
    const sizes = {};
    for (const [name, calls] of Object.entries(recorded)) {
      const N = calls[0].length / T;
      sizes[name] = layer_size(h, w, N);
      // (N, T) -> (T, N)
      maps[name] = calls.map((probs) =>
        Float32Array.from(probs, (_, k) => probs[(k % N) * T + ((k / N) | 0)]),
      );
    }
    return { maps, sizes, generation };
  }

  // AttentionMaps.token_maps at the layers' own size: each token's map at one call,
  // averaged over `layers` (all of one size): (T, N_l).
  function token_maps(maps, layers, call) {
    const sum = new Float64Array(maps[layers[0]][call].length);
    for (const name of layers) maps[name][call].forEach((v, k) => (sum[k] += v));
    return Float32Array.from(sum, (v) => v / layers.length);
  }

  // The levels the widget offers, finest first, as minsd's first result lists them:
  // [{size, layers, maps: (calls, T, h_l w_l)}]; 1 x 1 (one position) is no picture.
  function levels_of({ maps, sizes }) {
    const levels = [];
    for (const [name, size] of Object.entries(sizes)) {
      if (size[0] * size[1] === 1) continue;
      let level = levels.find((l) => l.size.join() === size.join());
      if (level === undefined) levels.push((level = { size, layers: [] }));
      level.layers.push(name);
    }
    for (const level of levels) {
      const calls = maps[level.layers[0]].map((_, i) => token_maps(maps, level.layers, i));
      level.maps = new Float32Array(calls.length * calls[0].length);
      calls.forEach((m, i) => level.maps.set(m, i * m.length));
    }
    return levels;
  }

  // dataset.py's foreground_mask: the pixels of an 8-bit image farther than 60 (in RGB)
  // from the median colour of its border. rgb (3, H, W) in [0, 1] -> (H W) booleans.
  function foreground_mask(rgb, size) {
    const hw = size * size;
    const at = (p) => [0, 1, 2].map((c) => Math.round(rgb[c * hw + p] * 255));
    const border = [];
    for (let k = 0; k < size; k++) {
      border.push(at(k), at((size - 1) * size + k), at(k * size), at(k * size + size - 1));
    }
    const median = [0, 1, 2].map((c) => {
      const v = border.map((p) => p[c]).sort((a, b) => a - b);
      return (v[(v.length - 1) >> 1] + v[v.length >> 1]) / 2;
    });
    return Array.from(
      { length: hw },
      (_, p) => Math.hypot(...at(p).map((v, c) => v - median[c])) > 60,
    );
  }

  // matplotlib's RdBu_r: blue below 0, white at 0, red above, for v in [-1, 1].
  const RDBU_R = "053061 2166ac 4393c3 92c5de d1e5f0 f7f7f7 fddbc7 f4a582 d6604d b2182b 67001f"
    .split(" ")
    .map((c) => [0, 2, 4].map((k) => parseInt(c.slice(k, k + 2), 16)));
  function rdbu_r(v) {
    const x = ((Math.min(Math.max(v, -1), 1) + 1) / 2) * (RDBU_R.length - 1);
    const k = Math.min(Math.floor(x), RDBU_R.length - 2);
    return RDBU_R[k].map((a, c) => Math.round(a + (x - k) * (RDBU_R[k + 1][c] - a)));
  }

  // Chapter 11's token_panels: the maps (T, n) of the tokens up to the end token, then
  // the padding's mean.
  function token_panels(maps, T, end) {
    const n = maps.length / T;
    const panels = Array.from({ length: end + 1 }, (_, j) => maps.subarray(j * n, (j + 1) * n));
    const padding = new Float32Array(n);
    for (let j = end + 1; j < T; j++) {
      for (let p = 0; p < n; p++) padding[p] += maps[j * n + p] / (T - end - 1);
    }
    return [...panels, padding];
  }

  // Chapter 11's relative: a map as percent above its mean, R_j = 100 (M_j / mean M_j - 1).
  function relative(map) {
    const mean = map.reduce((a, b) => a + b, 0) / map.length;
    return Array.from(map, (v) => 100 * (v / mean - 1));
  }

  const SCALE = 4; // map canvases: 4 canvas pixels an image pixel, for a thin outline

  // One relative map (h_l, w_l) stretched over the image, coloured at +-limit, with the
  // outline of mask (H W) between its pixels.
  function draw_map(canvas, relative, [h_l, w_l], limit, mask) {
    const context = canvas.getContext("2d");
    const side = canvas.width;
    for (let y = 0; y < h_l; y++) {
      for (let x = 0; x < w_l; x++) {
        context.fillStyle = `rgb(${rdbu_r(relative[y * w_l + x] / limit).join(",")})`;
        const [x0, y0] = [Math.round((x * side) / w_l), Math.round((y * side) / h_l)];
        const [x1, y1] = [Math.round(((x + 1) * side) / w_l), Math.round(((y + 1) * side) / h_l)];
        context.fillRect(x0, y0, x1 - x0, y1 - y0);
      }
    }
    const size = side / SCALE;
    const inside = (y, x) => y >= 0 && x >= 0 && y < size && x < size && mask[y * size + x];
    context.beginPath();
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        if (!inside(y, x)) continue;
        const [l, t, r, b] = [x * SCALE, y * SCALE, (x + 1) * SCALE, (y + 1) * SCALE];
        if (!inside(y, x - 1)) context.rect(l, t, 1, SCALE);
        if (!inside(y, x + 1)) context.rect(r - 1, t, 1, SCALE);
        if (!inside(y - 1, x)) context.rect(l, t, SCALE, 1);
        if (!inside(y + 1, x)) context.rect(l, b - 1, SCALE, 1);
      }
    }
    context.fillStyle = "#000";
    context.fill();
  }

  // What to try and what to notice. Each claim is checked by tests/test_live.py
  // against what the widget draws.
  const tries = (defaults) => [
    {
      label: "step i = 0",
      set: { ...defaults, step: 0, level: "8 × 8" },
      look: "maps",
      text:
        "At the first step the estimate D is a blur with no shape yet, and already the " +
        "maps have a pattern, as strong as at the last step: it cannot come from a " +
        "shape that is not drawn yet.",
    },
    {
      label: "by place",
      set: defaults,
      look: "maps",
      text:
        "At the last step, the first positions' maps (start, a, red, circle) look alike, " +
        "and the end token's and the padding's are their negative: the maps run with " +
        "the place in the prompt more than with the word.",
    },
  ];

  function attention_widget(root) {
    const first = config.first.attention; // minsd's maps for the opening controls
    // the opening controls, by name (the rest of first.defaults is fixed: N, g, ...)
    const { prompt: opening, seed: opening_seed } = first.defaults;
    const defaults = { prompt: opening, seed: opening_seed, step: first.step, level: "8 × 8" };
    const size = config.image_size;
    const prompt = minsd.ui.prompt_controls();
    const seed = minsd.ui.seed_control();
    const N = first.defaults.steps;
    const step = range("step i", { min: 0, max: N - 1, step: 1, value: first.step });
    const name = (size_l) => `${size_l[0]} × ${size_l[1]}`;
    const level = choice(
      "level",
      first.levels.map((l) => name(l.size)),
      defaults.level,
    );
    prompt.set(defaults.prompt);
    seed.set(defaults.seed);
    const image_canvas = pixel_canvas(size, "minsd-result");
    const denoised_canvas = pixel_canvas(size);
    const map_grid = h("div", { class: "minsd-panels minsd-maps" });
    const legend = h("div", { class: "minsd-legend" });
    const caption = h("p", { class: "minsd-caption" }, "");
    const controls = { prompt, seed, step, level };
    const parts = {
      image: figure("the image x_N", image_canvas),
      denoised: figure("D(x_i; σ_i)", denoised_canvas),
      maps: map_grid,
      step: step.root,
    };
    const sigmas = get_sigmas(minsd.ui.sigma_table(), N, first.defaults.spacing);
    const hw = size * size;
    const bytes = minsd.runtime.base64_bytes;
    // The shown run: {options, sigmas, pixels, levels, steps, decoded}; decoded
    // is filled per step when first shown (the build's: all of them).
    let result = {
      options: { ...first.defaults },
      sigmas,
      pixels: rgb_frames(first.pixels, 3 * hw)[0],
      levels: first.levels.map((l) => ({ ...l, maps: new Float32Array(bytes(l.maps).buffer) })),
      steps: null,
      decoded: rgb_frames(first.decoded, 3 * hw),
      prerendered: true,
    };

    const options = () => ({ ...first.defaults, prompt: prompt.value, seed: seed.value });

    async function compute(model, run) {
      const asked = options();
      const t0 = performance.now();
      const attention = await cross_attention_maps(model, asked, (i, n) => run.on_step(i, n));
      const ms = performance.now() - t0;
      const levels = levels_of(attention);
      result = { options: asked, ...attention.generation, levels, decoded: [], ms };
      run.say(`${N} steps and their maps in ${(ms / 1000).toFixed(2)} s`);
      await show(model);
    }

    // The maps at step i and the chosen level, the estimate D(x_i; sigma_i) beside.
    async function show(model) {
      const shown = result;
      const i = step.value;
      const chosen = shown.levels.find((l) => name(l.size) === level.value);
      const n = chosen.size[0] * chosen.size[1]; // positions
      const T = chosen.maps.length / (N * n); // tokens
      const maps = chosen.maps.subarray(i * T * n, (i + 1) * T * n); // (T, h_l w_l)
      const words = shown.options.prompt.split(" "); // one token each, in the vocabulary
      const panels = token_panels(maps, T, words.length + 1).map(relative);
      const limit = Math.max(...panels.flat().map(Math.abs));
      const labels = ["start", ...words, "end", "pad (mean)"];
      const mask = foreground_mask(shown.pixels, size);
      map_grid.replaceChildren(
        parts.image,
        parts.denoised,
        ...panels.map((r, j) => {
          const canvas = h("canvas", {
            width: size * SCALE,
            height: size * SCALE,
            class: "minsd-map",
          });
          draw_map(canvas, r, chosen.size, limit, mask);
          return figure(labels[j], canvas);
        }),
      );
      draw_rgb(image_canvas, shown.pixels);
      legend.replaceChildren(
        h("span", {}, `−${limit.toFixed(1)} %`),
        h("span", { class: "minsd-bar" }),
        h("span", {}, `+${limit.toFixed(1)} %`),
      );
      root.minsdResult = shown;
      root.minsdShown = { step: i, level: chosen.size, labels, maps: Array.from(maps), limit };
      caption.textContent =
        `step i = ${i} of N = ${N}: σ_i = ${shown.sigmas[i].toFixed(3)}; level ` +
        `${level.value}, its ${chosen.layers.length} layers averaged; each map red above ` +
        "its own mean, blue below, the image's shape outlined.";
      shown.decoded[i] ??= await model.decode(shown.steps[i].denoised);
      if (step.value !== i || result !== shown) return; // moved on meanwhile
      draw_rgb(denoised_canvas, shown.decoded[i]);
    }

    const runner = new minsd.ui.Runner(root, compute);
    // The API's run: a new run if the controls ask for another prompt or seed, else
    // the step and level of the shown one.
    async function run() {
      const asked = options();
      const same = Object.keys(asked).every((k) => asked[k] === result.options[k]);
      if (same) await show(runner.model);
      else await runner.request();
      return result;
    }

    for (const control of [step, level]) {
      control.input.addEventListener("input", () => show(runner.model));
    }
    for (const input of [...prompt.inputs, seed.input]) {
      input.addEventListener("input", () => runner.request());
    }
    const widget = minsd.ui.widget_api(root, controls, parts, run);
    root.append(
      minsd.ui.model_note(),
      prompt.root,
      h("div", { class: "minsd-controls" }, seed.root, step.root, level.root),
      runner.bar,
      map_grid,
      h("div", { class: "minsd-controls" }, legend, caption),
      minsd.ui.try_this(widget, tries(defaults)),
    );
    runner.say(minsd.ui.first_result_note());
    show(null);
    return widget;
  }

  (minsd.widgets ??= {}).attention = attention_widget;
  minsd.attention = {
    layer_size,
    recording_cross_attention,
    cross_attention_maps,
    token_maps,
    foreground_mask,
  };
})();
