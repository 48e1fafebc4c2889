// Guided tours: a few cards a reader steps through with Back and Next. Each card sets
// a widget's controls, runs it, outlines the part to look at, and says in a sentence or
// two what to notice there. A card may ask first: it sets the controls, shows its
// question and choices, and runs only once the reader has chosen; then it says whether
// the guess was right, and why.
//
//   {title, set, look, text}                        a card to read
//   {title, set, look, ask, choices, answer, text}  a card that asks first; answer is
//                                                   the index of the right choice
//
// set, look: as the widget API takes them (ui.js): controls by name, one part or
// control to outline. The first card must describe what the widget opens on: it is
// shown on load without running anything.
//
// The tour's element records where it is: data-card (the card shown, from 0) and
// data-state ("asking", "running", "done"), which tests wait for.
//
// A classic script (a page opened from disk may not import modules): it adds
// `minsd.tour` to the page.
"use strict";
(() => {
  const minsd = (globalThis.minsd ??= {});
  const { h } = minsd.ui;

  // The tour of a widget (ui.js's API) through cards: its element, and widget.tour =
  // {cards, show(k), choose(j)}, each resolving once the card is drawn.
  function tour(widget, cards) {
    const title = h("span", { class: "minsd-tour-title" }, "");
    const back = h("button", { type: "button", onclick: () => show(at - 1) }, "‹ Back");
    const next = h("button", { type: "button", onclick: () => show(at + 1) }, "Next ›");
    const ask = h("p", { class: "minsd-tour-ask" }, "");
    const choices = h("div", { class: "minsd-tour-choices" });
    const text = h("p", { class: "minsd-tour-text" }, "");
    const bar = h("div", { class: "minsd-tour-bar" }, h("strong", {}, "Guided tour"), " ");
    bar.append(title, h("span", { class: "minsd-tour-buttons" }, back, next));
    const root = h("div", { class: "minsd-tour" }, bar, ask, choices, text);
    let at = 0;
    let shown = 0; // counts the cards shown: a run that finishes late draws nothing

    function state(value) {
      root.dataset.state = value;
    }

    // Show card k: set its controls and outline its part; run (or ask first).
    async function show(k, run = true) {
      if (k < 0 || k >= cards.length) return;
      const card = cards[k];
      const mine = ++shown;
      at = k;
      root.dataset.card = String(k);
      title.textContent = `${k + 1} of ${cards.length}: ${card.title}`;
      back.disabled = k === 0;
      next.disabled = k === cards.length - 1;
      widget.set(card.set).highlight(card.look);
      choices.replaceChildren();
      if (card.ask === undefined) {
        ask.textContent = "";
        text.textContent = card.text;
        if (!run) return state("done");
        state("running");
        await widget.run();
        if (mine === shown) state("done");
        return;
      }
      ask.textContent = card.ask;
      text.textContent = "Make your guess: the widget runs when you choose.";
      card.choices.forEach((label, j) => {
        choices.append(h("button", { type: "button", onclick: () => choose(j) }, label));
      });
      state("asking");
    }

    // The reader's guess j on an asking card: run, then mark the right choice and say
    // what to notice.
    async function choose(j) {
      const card = cards[at];
      if (card.ask === undefined || root.dataset.state !== "asking") return;
      const mine = shown;
      const buttons = [...choices.children];
      for (const button of buttons) button.disabled = true;
      buttons[j].classList.add("minsd-chosen");
      text.textContent = "Running...";
      state("running");
      await widget.run();
      if (mine !== shown) return;
      buttons[card.answer].classList.add("minsd-right");
      const answer = card.choices[card.answer];
      const verdict = j === card.answer ? "Right." : `Not quite: ${answer}.`;
      text.textContent = `${verdict} ${card.text}`;
      state("done");
    }

    widget.tour = { cards, show, choose, element: root };
    show(0, false); // the widget opens on this card's picture
    return root;
  }

  minsd.tour = tour;
})();
