// Text to image and image to image with the default model in the reader's browser:
// the loop of minsd/pipeline.py's StableDiffusion.generate, step for step, on the
// networks that runtime.js loads. Equation numbers are the book's.
//
// The page runs no text encoder: the embeddings of every caption of the default model's
// vocabulary, and of the empty prompt, were computed by minsd when the book was built
// (minsd/live.py), and so was the starting noise n of every seed the page offers, drawn
// as generate draws it. The images are then the package's, to float rounding.
//
// A classic script (a page opened from disk may not import modules): it adds
// `minsd.pipeline` to the page.
"use strict";
(() => {
  const minsd = (globalThis.minsd ??= {});
  const { get_sigmas, sample_euler, sample_heun, sample_dpmpp_2m } = minsd.scheduler;

  const SAMPLERS = { euler: sample_euler, heun: sample_heun, dpmpp_2m: sample_dpmpp_2m };

  // Classifier-free guidance, eq. (5.2): D = D(x; sigma, uncond) + g (D(x; sigma, cond)
  // - D(x; sigma, uncond)), one UNet call on a batch of two halves [uncond, cond].
  // The exported UNet takes exactly that batch; at g = 1 minsd runs the conditional half
  // alone, the page runs both and keeps the conditional one.
  class CFGDenoiser {
    constructor(denoiser, cond, uncond, guidance) {
      this.denoiser = denoiser;
      this.cond = cond;
      this.uncond = uncond;
      this.guidance = guidance;
    }

    async forward(x, sigma) {
      const n = x.length;
      const context = concat(this.uncond, this.cond); // (2, T, D)
      const both = await this.denoiser.forward(concat(x, x), sigma, context);
      const denoised_uncond = both.subarray(0, n);
      const denoised_cond = both.subarray(n);
      if (this.guidance === 1) return denoised_cond.slice();
      const g = this.guidance;
      return denoised_uncond.map((u, j) => u + g * (denoised_cond[j] - u));
    }
  }

  function concat(a, b) {
    const out = new Float32Array(a.length + b.length);
    out.set(a);
    out.set(b, a.length);
    return out;
  }

  // img2img's strength must be in (0, 1] and leave at least one of the steps to run.
  function check_strength(strength, steps) {
    if (!(strength > 0 && strength <= 1)) {
      throw new RangeError(`strength must be in (0, 1], got ${strength}`);
    }
    if (Math.floor(steps * strength) < 1) {
      throw new RangeError(
        `strength ${strength} of ${steps} steps runs 0 steps; use at least ` +
          `${Math.ceil(1 / strength)} steps or a larger strength`,
      );
    }
  }

  // A cheap look at latents (minsd/preview.py): a linear map from the C latent channels
  // to RGB. latents (C, h, w), factors (C, 3) -> RGB (3, h, w) in [0, 1].
  function latents_to_rgb(latents, factors) {
    const C = factors.length;
    const hw = latents.length / C;
    const rgb = new Float32Array(3 * hw);
    for (let r = 0; r < 3; r++) {
      for (let p = 0; p < hw; p++) {
        let v = 0;
        for (let c = 0; c < C; c++) v += latents[c * hw + p] * factors[c][r];
        rgb[r * hw + p] = Math.min(Math.max(v / 2 + 0.5, 0), 1);
      }
    }
    return rgb;
  }

  // model: what runtime.load() returns (the networks and the build's data).
  // options: prompt (one of model.prompts), steps, guidance, seed, spacing, sampler, and
  // for image to image init_pixels ((3, H, W) in [0, 1]) and strength.
  // Returns {pixels (3, H, W) in [0, 1], latents, sigmas, steps: [{i, sigma, x,
  // denoised}]}; on_step(i, n) is called after each step (for a progress bar).
  async function generate(model, options, on_step = null) {
    const { prompt, steps, guidance, seed, spacing, sampler } = options;
    const { init_pixels = null, strength = null } = options;
    const data = model.data;
    if (!data.prompts.includes(prompt)) {
      throw new RangeError(
        `the page knows the ${data.prompts.length} prompts of the ` +
          `default model's vocabulary, not '${prompt}'`,
      );
    }
    if (!(Number.isInteger(seed) && seed >= 0 && seed < data.num_seeds)) {
      throw new RangeError(`seed must be an integer in [0, ${data.num_seeds}), got ${seed}`);
    }
    if (!(sampler in SAMPLERS)) {
      throw new RangeError(
        `unknown sampler '${sampler}'; expected one of ${Object.keys(SAMPLERS)}`,
      );
    }
    if (!Number.isFinite(guidance)) {
      throw new RangeError(`guidance must be a finite number (1 turns it off), got ${guidance}`);
    }
    if (init_pixels !== null) check_strength(strength, steps);

    // 1. The schedule: N + 1 noise levels from sigma_0 down to 0; image to image runs
    // only the last floor(N s) steps, from sigma_k, k = N - floor(N s), eq. (10.4).
    let sigmas = get_sigmas(model.denoiser.sigma_table, steps, spacing);
    if (init_pixels !== null) sigmas = sigmas.slice(steps - Math.floor(steps * strength));

    // 2. Text: the prompt's embedding, and the empty prompt's for guidance.
    const cond = data.embedding(prompt); // (1, T, D)
    const uncond = data.embedding(""); // (1, T, D)
    const denoiser = new CFGDenoiser(model.denoiser, cond, uncond, guidance);

    // 3. The start x_0 = sigma_0 n, eq. (7.2), n the seed's noise from torch's CPU
    // generator; image to image starts from the image's latents z: x = z + sigma_k n,
    // eq. (10.3).
    const noise = data.noise(seed); // n, (1, C, h, w)
    let x = noise.map((v) => v * sigmas[0]);
    if (init_pixels !== null) {
      const z = await model.encode(init_pixels); // (1, C, h, w)
      x = x.map((v, j) => v + z[j]);
    }

    // 4. Solve the ODE from sigma_0 down to 0, keeping every step for the slider.
    const recorded = [];
    const n_steps = sigmas.length - 1;
    const callback = (step) => {
      recorded.push(step);
      if (on_step) on_step(step.i, n_steps);
    };
    const latents = await SAMPLERS[sampler](
      (x, sigma) => denoiser.forward(x, sigma),
      x,
      sigmas,
      callback,
    );
    if (!latents.every(Number.isFinite)) throw new Error("sampling produced NaN/inf latents");

    // 5. Latents -> pixels.
    const pixels = await model.decode(latents);
    return { pixels, latents, sigmas, steps: recorded };
  }

  minsd.pipeline = { SAMPLERS, CFGDenoiser, check_strength, latents_to_rgb, generate };
})();
