// The book's toy data: a 2-D Gaussian mixture whose denoiser D(x; sigma) is known
// exactly, minsd/toy.py in JavaScript. Equation numbers are the book's.
//
// Data p_0 = sum_k pi_k N(mu_k, s_k^2 I); noise of level sigma blurs each component,
// p(x; sigma) = sum_k pi_k N(x; mu_k, (s_k^2 + sigma^2) I), eq. (1.3), and the ideal
// denoiser is the posterior mean, eq. (1.7):
//
//   D(x; sigma) = sum_k w_k(x) (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)),
//   w_k(x) = pi_k N(x; mu_k, (s_k^2 + sigma^2) I) / p(x; sigma), eq. (1.5).
//
// Points are n x 2 typed arrays (x0, y0, x1, y1, ...), so scheduler.js's samplers run
// on them unchanged; the arithmetic is float64 inside, and D(x; sigma) comes back in
// x's type, as in minsd.
//
// A classic script (a page opened from disk may not import modules): it adds
// `minsd.toy` to the page.
"use strict";
(() => {
  const minsd = (globalThis.minsd ??= {});

  class GaussianMixture {
    constructor(means, stds, weights = null) {
      this.means = means; // K x [x, y]
      this.stds = stds; // K
      this.weights = weights ?? means.map(() => 1 / means.length); // K
    }

    // log pi_k + log N(x; mu_k, (s_k^2 + sigma^2) I) for every component of one point.
    _log_joint(x, y, sigma) {
      return this.means.map(([mx, my], k) => {
        const v = this.stds[k] ** 2 + sigma ** 2;
        const sq = (x - mx) ** 2 + (y - my) ** 2;
        return Math.log(this.weights[k]) - sq / (2 * v) - Math.log(2 * Math.PI * v);
      });
    }

    // log p(x; sigma) of one point (x, y), eq. (1.3).
    log_density(x, y, sigma) {
      const log_joint = this._log_joint(x, y, sigma);
      const top = Math.max(...log_joint);
      return top + Math.log(log_joint.reduce((s, l) => s + Math.exp(l - top), 0));
    }

    // w_k(x) = P(component k | x), eq. (1.5), of one point: K numbers (a softmax).
    posterior_weights(x, y, sigma) {
      const log_joint = this._log_joint(x, y, sigma);
      const top = Math.max(...log_joint);
      const e = log_joint.map((l) => Math.exp(l - top));
      const total = e.reduce((s, v) => s + v, 0);
      return e.map((v) => v / total);
    }

    // The exact D(x; sigma) = E[y | x], eq. (1.7): n x 2 -> n x 2.
    denoise(points, sigma) {
      const out = new points.constructor(points.length);
      for (let p = 0; p < points.length; p += 2) {
        const w = this.posterior_weights(points[p], points[p + 1], sigma);
        let dx = 0;
        let dy = 0;
        this.means.forEach(([mx, my], k) => {
          const shrink = this.stds[k] ** 2 / (this.stds[k] ** 2 + sigma ** 2);
          dx += w[k] * (mx + shrink * (points[p] - mx));
          dy += w[k] * (my + shrink * (points[p + 1] - my));
        });
        out[p] = dx;
        out[p + 1] = dy;
      }
      return out;
    }
  }

  // The book's running example: three blobs of different sizes and weights.
  function example_mixture() {
    return new GaussianMixture(
      [
        [-2.0, -1.0],
        [2.0, -1.0],
        [0.0, 2.0],
      ],
      [0.3, 0.5, 0.2],
      [0.5, 0.3, 0.2],
    );
  }

  // Run sampler(denoiser, x, sigmas) and keep x at every noise level: len(sigmas)
  // arrays, entry i the sampler's x_i at sigmas[i] (from its callback), the last its
  // result.
  async function trajectory(sampler, denoiser, x, sigmas) {
    const path = [];
    const x_last = await sampler(denoiser, x, sigmas, (step) => path.push(step.x));
    if (path.length !== sigmas.length - 1) {
      throw new Error(
        `expected the sampler to report ${sigmas.length - 1} steps, got ${path.length}`,
      );
    }
    return [...path, x_last];
  }

  minsd.toy = { GaussianMixture, example_mixture, trajectory };
})();
