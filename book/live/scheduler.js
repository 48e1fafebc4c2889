// Noise schedules and samplers: minsd/scheduler.py in JavaScript, name for name and
// equation for equation, for the book's live widgets. Equation numbers are the book's.
//
// A tensor here is a flat Float32Array (the sampler's state, float32 as in minsd: a
// sampler first copies x into one, as minsd's call x.float()) or a plain array of
// numbers (a schedule, float64 as in minsd). The samplers are stateless
// and take any denoiser(x, sigma) -> D(x; sigma), plain or async (the page's runs the
// UNet with ONNX Runtime Web and returns a promise).
//
// A classic script, not an ES module: a page opened from disk (file://) may not import
// modules. It adds `minsd.scheduler` to the page.
"use strict";
(() => {
  const minsd = (globalThis.minsd ??= {});
  const { linspace, t_to_sigma } = minsd.denoiser; // linspace: torch's

  function check_num_steps(num_steps) {
    if (!Number.isInteger(num_steps) || num_steps < 1) {
      throw new RangeError(`num_steps must be a positive integer, got ${num_steps}`);
    }
  }

  // The training steps t_0 > t_1 > ... > t_{N-1} a discrete schedule visits, eq. (6.1).
  //   linspace: evenly from M-1 down to 0, fractional in between;
  //   leading:  multiples of M // N counted up from 0, shifted by steps_offset;
  //   trailing: multiples of M / N counted down from M, minus 1.
  function spaced_timesteps(num_steps, spacing, num_train_timesteps = 1000, steps_offset = 1) {
    check_num_steps(num_steps);
    const M = num_train_timesteps;
    const N = num_steps;
    if ((spacing === "leading" || spacing === "trailing") && N > M) {
      throw new RangeError(`'${spacing}' spacing: at most ${M} steps, got ${N}`);
    }
    let t;
    if (spacing === "linspace") {
      t = linspace(M - 1, 0, N); // from M-1 down: one step starts from pure noise
    } else if (spacing === "leading") {
      const stride = Math.floor(M / N);
      t = Array.from({ length: N }, (_, i) => (N - 1 - i) * stride + steps_offset);
    } else if (spacing === "trailing") {
      // torch.round rounds half to even; M * k / N is a whole or half number
      t = Array.from({ length: N }, (_, i) => round_half_even((M * (N - i)) / N) - 1);
    } else {
      throw new RangeError(`unknown timestep spacing '${spacing}' (see get_sigmas)`);
    }
    if (t[0] > M - 1) {
      throw new RangeError(
        `'${spacing}' spacing with ${N} steps would start at t = ${t[0]}, past the ` +
          `last training step ${M - 1}; use at most ${N - 1} steps`,
      );
    }
    return t;
  }

  function round_half_even(v) {
    const r = Math.round(v);
    return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  // Karras et al. 2022, eq. (5), the book's eq. (6.2): the N noise levels, without the
  // final 0. rho = 7 spends more steps at low noise.
  function karras_sigmas(num_steps, sigma_min, sigma_max, rho = 7.0) {
    check_num_steps(num_steps);
    const ramp = linspace(0, 1, num_steps);
    const max_inv_rho = sigma_max ** (1 / rho);
    const min_inv_rho = sigma_min ** (1 / rho);
    return ramp.map((r) => (max_inv_rho + r * (min_inv_rho - max_inv_rho)) ** rho);
  }

  const SPACINGS = ["linspace", "leading", "trailing", "karras"];

  // The schedule for num_steps model evaluations: N + 1 noise levels, ending in 0.
  // sigma_table: the model's training noise levels, increasing (see denoiser.js).
  function get_sigmas(sigma_table, num_steps, spacing = "linspace") {
    if (!SPACINGS.includes(spacing)) {
      throw new RangeError(`unknown spacing '${spacing}'; expected one of ${SPACINGS}`);
    }
    let sigmas;
    if (spacing === "karras") {
      sigmas = karras_sigmas(num_steps, sigma_table[0], sigma_table[sigma_table.length - 1]);
    } else {
      sigmas = spaced_timesteps(num_steps, spacing, sigma_table.length).map((t) =>
        t_to_sigma(t, sigma_table),
      );
    }
    return [...sigmas, 0];
  }

  // Hands a step to the callback, as minsd's samplers do: {i, sigma, sigma_next, x,
  // denoised}. The arrays are the sampler's own, never changed afterwards.
  function report(callback, i, sigma, sigma_next, x, denoised) {
    if (callback) callback({ i, sigma, sigma_next, x, denoised });
  }

  // Euler's method on dx/dsigma = (x - D(x; sigma)) / sigma, eq. (2.2) and (7.3), from
  // sigmas[0] down to sigmas[at the end]. x: noise already scaled to sigmas[0].
  async function sample_euler(denoiser, x, sigmas, callback = null) {
    x = Float32Array.from(x); // the state is kept in float32
    for (let i = 0; i < sigmas.length - 1; i++) {
      const sigma = sigmas[i];
      const sigma_next = sigmas[i + 1];
      const denoised = await denoiser(x, sigma); // D(x_i; sigma_i)
      report(callback, i, sigma, sigma_next, x, denoised);
      const dt = sigma_next - sigma; // negative: we walk towards sigma = 0
      const x_next = new Float32Array(x.length);
      for (let j = 0; j < x.length; j++) {
        const d = (x[j] - denoised[j]) / sigma; // dx/dsigma at (x_i, sigma_i)
        x_next[j] = x[j] + d * dt; // x_{i+1}
      }
      x = x_next;
    }
    return x;
  }

  // Heun's second-order method, Karras et al. 2022, Algorithm 1, eq. (2.5):
  // an Euler step, then a correction with the slope at its end point; the last step
  // (to sigma = 0) stays an Euler step. 2N - 1 denoiser calls for N steps.
  async function sample_heun(denoiser, x, sigmas, callback = null) {
    x = Float32Array.from(x); // the state is kept in float32
    for (let i = 0; i < sigmas.length - 1; i++) {
      const sigma = sigmas[i];
      const sigma_next = sigmas[i + 1];
      const denoised = await denoiser(x, sigma);
      report(callback, i, sigma, sigma_next, x, denoised);
      const dt = sigma_next - sigma;
      const d = new Float32Array(x.length); // slope at the start
      const x_euler = new Float32Array(x.length);
      for (let j = 0; j < x.length; j++) {
        d[j] = (x[j] - denoised[j]) / sigma;
        x_euler[j] = x[j] + d[j] * dt;
      }
      if (sigma_next === 0) {
        x = x_euler;
      } else {
        const denoised_next = await denoiser(x_euler, sigma_next);
        const x_next = new Float32Array(x.length);
        for (let j = 0; j < x.length; j++) {
          const d_next = (x_euler[j] - denoised_next[j]) / sigma_next; // slope at the end
          x_next[j] = x[j] + ((d[j] + d_next) / 2) * dt; // trapezoidal rule
        }
        x = x_next;
      }
    }
    return x;
  }

  // DPM-Solver++(2M), Lu et al. 2022, Algorithm 2, on sigma: eq. (8.3) and (8.4).
  // In t = -log sigma, a step of h = t_next - t is x_next = (sigma_next / sigma) x -
  // (e^-h - 1) D, with D held at D_i for the first step (DDIM: Euler's step) and taken
  // on the line through the last two denoised values, at the step's midpoint, after:
  // D_d = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}, r = h_last / h. A step to sigma = 0
  // returns D(x_i; sigma_i).
  async function sample_dpmpp_2m(denoiser, x, sigmas, callback = null) {
    x = Float32Array.from(x); // the state is kept in float32
    let old_denoised = null; // D(x_{i-1}; sigma_{i-1}), within this call
    for (let i = 0; i < sigmas.length - 1; i++) {
      const sigma = sigmas[i];
      const sigma_next = sigmas[i + 1];
      const denoised = await denoiser(x, sigma); // D(x_i; sigma_i)
      report(callback, i, sigma, sigma_next, x, denoised);
      if (sigma_next === 0) {
        x = denoised; // t_next = inf: the step below with e^-h = 0
      } else {
        const t = -Math.log(sigma);
        const t_next = -Math.log(sigma_next);
        const h = t_next - t;
        let denoised_d = denoised; // first step: D held constant (DPM-Solver++1, DDIM)
        if (old_denoised !== null) {
          const h_last = t + Math.log(sigmas[i - 1]); // t_i - t_{i-1}
          const r = h_last / h; // Algorithm 2: r_i = h_{i-1} / h_i
          denoised_d = new Float32Array(x.length);
          for (let j = 0; j < x.length; j++) {
            denoised_d[j] = (1 + 1 / (2 * r)) * denoised[j] - (1 / (2 * r)) * old_denoised[j];
          }
        }
        const x_next = new Float32Array(x.length);
        const expm1_h = Math.expm1(-h);
        for (let j = 0; j < x.length; j++) {
          x_next[j] = (sigma_next / sigma) * x[j] - expm1_h * denoised_d[j];
        }
        x = x_next;
      }
      old_denoised = denoised;
    }
    return x;
  }

  minsd.scheduler = {
    SPACINGS,
    spaced_timesteps,
    karras_sigmas,
    get_sigmas,
    sample_euler,
    sample_heun,
    sample_dpmpp_2m,
  };
})();
