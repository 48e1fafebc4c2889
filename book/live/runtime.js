// Loads ONNX Runtime Web and the default model into the page, once, when a widget first
// needs them (the reader's first Run), and wraps the three networks as functions.
//
// Every file is a classic script that stores its contents in
// globalThis.minsdLiveFiles[name]: Chromium refuses to fetch files or import modules
// from a page opened from disk (file://, origin 'null'), but runs classic scripts, so
// one path serves a file and a server alike. The runtime's ES module bundle is imported
// from a Blob URL, the WebAssembly binary and the ONNX files are handed over as bytes
// (env.wasm.wasmBinary, InferenceSession.create(bytes)). One WebAssembly thread: more
// need cross-origin isolation, which neither a file nor a static host provides.
//
// It adds `minsd.runtime` to the page.
"use strict";
(() => {
  const minsd = (globalThis.minsd ??= {});
  const { Denoiser, scaled_linear_alphas_cumprod } = minsd.denoiser;
  // The folder of this script: the other files lie beside it.
  const BASE = new URL(".", document.currentScript.src);
  // What load() fetches, in order, with what the progress bar says meanwhile.
  const FILES = [
    ["ort.wasm.bundle.min.mjs", "the runtime"],
    ["ort-wasm-simd-threaded.wasm", "the runtime"],
    ["data.json", "the prompts and seeds"],
    ["unet.onnx", "the UNet"],
    ["vae_decoder.onnx", "the VAE"],
    ["vae_encoder.onnx", "the VAE"],
  ];

  function load_script(name) {
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = new URL(`${name}.js`, BASE).href;
      script.onload = () => {
        script.remove();
        const value = globalThis.minsdLiveFiles?.[name];
        if (value === undefined) reject(new Error(`${name}.js did not define ${name}`));
        delete globalThis.minsdLiveFiles[name]; // keep no second copy of the bytes
        resolve(value);
      };
      script.onerror = () => reject(new Error(`could not load ${name}.js`));
      document.head.append(script);
    });
  }

  function base64_bytes(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function base64_float32(text) {
    return new Float32Array(base64_bytes(text).buffer); // written little-endian
  }

  // The build's data (minsd/live.py): prompts, embeddings, noise, schedule parameters.
  function read_data(json) {
    const embeddings = base64_float32(json.embeddings); // (prompts, T, D)
    const noise = base64_float32(json.noise); // (num_seeds, C, h, w)
    const [T, D] = json.text_shape;
    const latent_size = json.latent_shape.reduce((a, b) => a * b);
    return {
      ...json,
      embedding(prompt) {
        const k = json.prompts.indexOf(prompt);
        return embeddings.subarray(k * T * D, (k + 1) * T * D);
      },
      noise(seed) {
        return noise.subarray(seed * latent_size, (seed + 1) * latent_size);
      },
    };
  }

  // Resolves in a new task: the page may draw (a progress bar) before the next call.
  const channel = new MessageChannel();
  function next_task() {
    return new Promise((resolve) => {
      channel.port1.onmessage = resolve;
      channel.port2.postMessage(null);
    });
  }

  // One ONNX session as an async function of Float32Arrays, with the shapes the file
  // was exported with: it returns the named output, or with output null all of them
  // by name. WebAssembly runs on the page's thread: each call first lets the page draw.
  function network(ort, session, shapes, output) {
    return async (...inputs) => {
      await next_task();
      const feeds = {};
      session.inputNames.forEach((name, k) => {
        feeds[name] = new ort.Tensor("float32", inputs[k], shapes[name]);
      });
      const results = await session.run(feeds, output === null ? undefined : [output]);
      if (output !== null) return results[output].data;
      return Object.fromEntries(Object.entries(results).map(([k, v]) => [k, v.data]));
    };
  }

  let loading = null;

  // The model, loaded on the first call: {data, denoiser, unet, unet_maps, decode,
  // encode}; unet_maps returns {eps, and per attn2 layer its maps} (minsd/live.py's
  // UNetWithMaps), unet eps alone.
  // on_progress(fraction, what) reports each file; a failed load can be tried again.
  function load(on_progress = () => {}) {
    loading ??= load_once(on_progress).catch((error) => {
      loading = null;
      throw error;
    });
    return loading;
  }

  async function load_once(on_progress) {
    if (typeof WebAssembly !== "object") {
      throw new Error("this browser cannot run WebAssembly, which the model needs");
    }
    const got = {};
    for (const [k, [name, what]] of FILES.entries()) {
      on_progress(k / FILES.length, `loading ${what}`);
      got[name] = await load_script(name);
      // Let the page draw the progress bar between files.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    on_progress(1, "starting the runtime");
    const source = new Blob([got["ort.wasm.bundle.min.mjs"]], { type: "text/javascript" });
    const url = URL.createObjectURL(source);
    const ort = await import(url);
    URL.revokeObjectURL(url);
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.proxy = false;
    ort.env.wasm.wasmBinary = base64_bytes(got["ort-wasm-simd-threaded.wasm"]);
    const options = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
    const session = (name) => ort.InferenceSession.create(base64_bytes(got[name]), options);
    const [unet, decoder, encoder] = [
      await session("unet.onnx"),
      await session("vae_decoder.onnx"),
      await session("vae_encoder.onnx"),
    ];
    const data = read_data(got["data.json"]);
    const [C, h, w] = data.latent_shape;
    const [T, D] = data.text_shape;
    const H = data.image_size;
    const unet_shapes = { x: [2, C, h, w], t: [2], context: [2, T, D] };
    const model = {
      data,
      unet: network(ort, unet, unet_shapes, "eps"),
      unet_maps: network(ort, unet, unet_shapes, null),
      decode: network(ort, decoder, { latents: [1, C, h, w] }, "pixels"),
      encode: network(ort, encoder, { pixels: [1, 3, H, H] }, "latents"),
    };
    const alphas_cumprod = scaled_linear_alphas_cumprod(
      data.beta_start,
      data.beta_end,
      data.num_train_timesteps,
    );
    model.denoiser = new Denoiser(model.unet, alphas_cumprod, 2);
    return model;
  }

  minsd.runtime = { load, base64_bytes };
})();
