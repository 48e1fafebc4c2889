// The parts every live widget is built from: labelled controls, pixel canvases, the
// Run bar (Runner), the "try this, notice that" lines, and the small API by which a
// reader's click, a test or a guided tour drives a widget:
//
//   widget.set({steps: 1, ...})   set controls by name, as a reader would (no run yet)
//   await widget.run()            compute what the controls now say (loading the
//                                 model first if it needs one); resolves when drawn
//   widget.highlight("image")     outline one part, or a control, by name (null: none)
//   widget.controls, widget.parts the named controls and parts
//
// The book's settings (globalThis.minsdLiveConfig) come from the build
// (book/_ext/minsd_live.py): the vocabulary, samplers and spacings, and the first
// result each widget opens on, drawn by minsd (minsd/live.py, first_results).
//
// A classic script (a page opened from disk may not import modules): it adds
// `minsd.ui` to the page.
"use strict";
(() => {
  const minsd = (globalThis.minsd ??= {});
  const config = globalThis.minsdLiveConfig ?? {};

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
    return {
      root,
      input,
      set(v) {
        input.value = v;
        shown.textContent = show(Number(input.value));
      },
      get value() {
        return Number(input.value);
      },
    };
  }

  // A labelled menu of names, each shown as it is spelled in Python.
  function choice(label, names, value) {
    const select = h("select", {});
    for (const name of names) select.append(h("option", { value: name }, name));
    select.value = value;
    const root = h("label", { class: "minsd-control" }, label ? `${label} ` : "", select);
    return {
      root,
      input: select,
      set(v) {
        select.value = v;
      },
      get value() {
        return select.value;
      },
    };
  }

  function pixel_canvas(size, className = "") {
    return h("canvas", { width: size, height: size, class: `minsd-pixels ${className}` });
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

  // The build's 8-bit images (base64, n x (3, H, W)) -> n arrays (3, H, W) in [0, 1].
  function rgb_frames(text, size) {
    const bytes = minsd.runtime.base64_bytes(text);
    return Array.from({ length: bytes.length / size }, (_, k) =>
      Float32Array.from(bytes.subarray(k * size, (k + 1) * size), (v) => v / 255),
    );
  }

  function figure(label, canvas) {
    return h("figure", { class: "minsd-panel" }, canvas, h("figcaption", {}, label));
  }

  // The Run bar every model widget shares: a button, a progress bar and one status
  // line. compute(model, runner) does one run; requests while it runs are merged into
  // one more run afterwards, so dragging a slider never queues stale work.
  class Runner {
    constructor(root, compute) {
      this.root = root;
      this.compute = compute;
      this.model = null;
      this.running = false;
      this.pending = false;
      this.finished = Promise.resolve();
      this.runs = 0;
      this.button = h("button", { type: "button", onclick: () => this.request() }, "Run");
      this.progress = h("progress", { max: 1, value: 0 });
      this.status = h("span", { class: "minsd-status" }, "");
      this.bar = h("div", { class: "minsd-run" }, this.button, this.progress, this.status);
      root.dataset.state = "idle";
      root.dataset.runs = "0";
    }

    say(text, error = false) {
      this.status.textContent = text;
      this.status.classList.toggle("minsd-error", error);
    }

    // Run once more (loading the model first); resolves when that run is drawn.
    request() {
      if (this.running) {
        this.pending = true;
        return this.finished;
      }
      this.finished = this.start();
      return this.finished;
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

  // What the status line says while a widget shows the build's picture.
  function first_result_note() {
    const size = config.download_mb ? ` (the first run loads ${config.download_mb} MB)` : "";
    return (
      "Drawn by minsd when the book was built. Press Run or change anything to " +
      `compute in your browser${size}.`
    );
  }

  // What every model widget says about the model it runs.
  function model_note() {
    const note = config.other_weights
      ? `The figures on this page were drawn with ${config.other_weights}; this widget runs ` +
        "minsd's default model in your browser instead (SD 1.5 is far too large for a page)."
      : "This widget runs minsd's default model in your browser with ONNX Runtime Web.";
    return h("p", { class: "minsd-note" }, note);
  }

  // "a {colour} {shape} on a {background} background", from three menus.
  function prompt_controls() {
    const { colours, shapes, backgrounds } = config.vocabulary;
    const colour = choice("", Object.keys(colours), Object.keys(colours)[0]);
    const shape = choice("", shapes, shapes[0]);
    const background = choice("", Object.keys(backgrounds), Object.keys(backgrounds)[0]);
    const root = h("div", { class: "minsd-prompt" }, "Prompt: a ", colour.root, " ");
    root.append(shape.root, " on a ", background.root, " background");
    return {
      root,
      inputs: [colour.input, shape.input, background.input],
      set(prompt) {
        const words = /^a (\w+) (\w+) on a (\w+) background$/.exec(prompt);
        if (words === null) throw new RangeError(`not a prompt of the vocabulary: '${prompt}'`);
        [colour, shape, background].forEach((menu, k) => menu.set(words[k + 1]));
      },
      get value() {
        return `a ${colour.value} ${shape.value} on a ${background.value} background`;
      },
    };
  }

  // SD's training noise levels (denoiser.js) from the build's settings: the page draws
  // schedules before the model has loaded.
  function sigma_table() {
    const { beta_start, beta_end, num_train_timesteps } = config.schedule;
    const { scaled_linear_alphas_cumprod, sigmas_from_alphas_cumprod } = minsd.denoiser;
    return sigmas_from_alphas_cumprod(
      scaled_linear_alphas_cumprod(beta_start, beta_end, num_train_timesteps),
    );
  }

  function seed_control() {
    return range("seed", { min: 0, max: config.num_seeds - 1, step: 1, value: 0 });
  }

  // A widget's API (see the top of this file) from its named controls and parts and
  // its run().
  function widget_api(root, controls, parts, run) {
    const api = {
      root,
      controls,
      parts,
      set(values) {
        for (const [name, value] of Object.entries(values)) {
          if (!(name in controls)) throw new RangeError(`no control '${name}'`);
          controls[name].set(value);
        }
        return api;
      },
      run,
      highlight(name) {
        for (const e of root.querySelectorAll(".minsd-highlight")) {
          e.classList.remove("minsd-highlight");
        }
        if (name === null) return api;
        const element = parts[name] ?? controls[name]?.root;
        if (element === undefined) throw new RangeError(`no part or control '${name}'`);
        element.classList.add("minsd-highlight");
        return api;
      },
    };
    return api;
  }

  // "Try this, notice that": lines of {label, set, look, text}; the button sets the
  // controls, outlines the part to look at and runs (the line's data-state says
  // "running", then "done"). Open, except on a phone, where the widget would not fit
  // the screen with them.
  function try_this(widget, lines) {
    const items = lines.map((line) => {
      const item = h("li", {});
      const show = async () => {
        item.dataset.state = "running";
        await widget.set(line.set).highlight(line.look).run();
        item.dataset.state = "done";
      };
      item.append(h("button", { type: "button", onclick: show }, line.label), " ", line.text);
      return item;
    });
    widget.tries = lines;
    const title = h("summary", {}, "Try this, notice that");
    const details = h("details", { class: "minsd-try" }, title, h("ul", {}, ...items));
    details.open = !matchMedia("(max-width: 500px)").matches;
    return details;
  }

  minsd.ui = {
    config,
    h,
    range,
    choice,
    pixel_canvas,
    draw_rgb,
    read_rgb,
    rgb_frames,
    figure,
    Runner,
    first_result_note,
    model_note,
    prompt_controls,
    sigma_table,
    seed_control,
    widget_api,
    try_this,
  };
})();
