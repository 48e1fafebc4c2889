// The denoiser D(x; sigma): minsd/denoiser.py in JavaScript, name for name and equation
// for equation, for the book's live widgets. Equation numbers are the book's.
//
// SD was trained as a discrete variance-preserving model: at training step t a clean
// latent y becomes sqrt(abar_t) y + sqrt(1 - abar_t) eps, eq. (3.1), i.e. y + sigma_t eps
// divided by sqrt(abar_t), eq. (3.2). Karras et al.'s Table 1 (VP) turns the network
// F_theta, which predicts eps, into the denoiser of eq. (3.3) with the coefficients of
// eq. (3.4): D(x; sigma) = x - sigma F_theta(x / sqrt(sigma^2 + 1); t(sigma)), eq. (3.5).
//
// A classic script (a page opened from disk may not import modules): it adds
// `minsd.denoiser` to the page.
"use strict";
(() => {
  const minsd = (globalThis.minsd ??= {});

  // torch.linspace in float64, with torch's arithmetic (scheduler.js uses it too).
  function linspace(start, end, steps) {
    if (steps === 1) return [start];
    const step = (end - start) / (steps - 1);
    const half = Math.floor(steps / 2);
    return Array.from({ length: steps }, (_, i) =>
      i < half ? start + step * i : end - step * (steps - 1 - i),
    );
  }

  // SD's training schedule, M numbers: abar_t = prod_{s<=t} (1 - beta_s), with the betas
  // evenly spaced in their square root.
  function scaled_linear_alphas_cumprod(
    beta_start = 0.00085,
    beta_end = 0.012,
    num_train_timesteps = 1000,
  ) {
    const sqrt_betas = linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps);
    let product = 1;
    return sqrt_betas.map((sqrt_beta) => (product *= 1 - sqrt_beta ** 2));
  }

  // sigma_t = sqrt((1 - abar_t) / abar_t), eq. (3.2): the noise level of each training
  // step, increasing.
  function sigmas_from_alphas_cumprod(alphas_cumprod) {
    return alphas_cumprod.map((abar) => ((1 - abar) / abar) ** 0.5);
  }

  // t(sigma) = sigma^-1(sigma): the fractional training step of a noise level, by linear
  // interpolation in log sigma. Exact at the table's points; clamped to [0, M-1].
  function sigma_to_t(sigma, sigma_table) {
    const log_table = sigma_table.map(Math.log); // increasing
    const log_sigma = Math.log(Math.max(sigma, 1e-10));
    // The table interval [low, low+1] that holds log_sigma (searchsorted, right=True).
    let low = log_table.findIndex((v) => v > log_sigma);
    low = (low === -1 ? log_table.length : low) - 1;
    low = Math.min(Math.max(low, 0), log_table.length - 2);
    const w = (log_sigma - log_table[low]) / (log_table[low + 1] - log_table[low]);
    return low + Math.min(Math.max(w, 0), 1);
  }

  // sigma(t): the noise level of a fractional training step, by linear interpolation
  // in sigma (as diffusers builds its schedules, which minsd's must match).
  function t_to_sigma(t, sigma_table) {
    const low = Math.min(Math.max(Math.floor(t), 0), sigma_table.length - 2);
    const w = t - low;
    return (1 - w) * sigma_table[low] + w * sigma_table[low + 1];
  }

  // Karras et al. 2022, Table 1 (VP), eq. (3.4), for an eps-predictor: the coefficients
  // (c_skip, c_out, c_in, c_noise) at sigma; c_noise = t(sigma) in 0..M-1.
  function vp_coefficients(sigma, sigma_table) {
    const c_skip = 1;
    const c_out = -sigma;
    const c_in = 1 / (sigma ** 2 + 1) ** 0.5; // c_in x = sqrt(abar_t) x = x_t
    const c_noise = sigma_to_t(sigma, sigma_table);
    return [c_skip, c_out, c_in, c_noise];
  }

  // D(x; sigma) for an eps-prediction network trained on a discrete VP schedule.
  // unet(x_in, t, context) -> eps runs F_theta (on the page: ONNX Runtime Web); x is a
  // batch (B, C, h, w) as one Float32Array, sigma one number for the whole batch.
  class Denoiser {
    constructor(unet, alphas_cumprod, batch_size) {
      this.unet = unet;
      this.batch_size = batch_size;
      this.sigma_table = sigmas_from_alphas_cumprod(alphas_cumprod); // M, increasing
    }

    get sigma_min() {
      return this.sigma_table[0];
    }

    get sigma_max() {
      return this.sigma_table[this.sigma_table.length - 1];
    }

    async forward(x, sigma, context) {
      const [c_skip, c_out, c_in, c_noise] = vp_coefficients(sigma, this.sigma_table);
      const x_in = x.map((v) => c_in * v); // c_in x: the UNet's training input x_t
      const t = new Float32Array(this.batch_size).fill(c_noise);
      const eps = await this.unet(x_in, t, context);
      // eq. (3.3): D(x) = c_skip x + c_out F(c_in x; c_noise)
      return x.map((v, j) => c_skip * v + c_out * eps[j]);
    }
  }

  minsd.denoiser = {
    linspace,
    scaled_linear_alphas_cumprod,
    sigmas_from_alphas_cumprod,
    sigma_to_t,
    t_to_sigma,
    vp_coefficients,
    Denoiser,
  };
})();
