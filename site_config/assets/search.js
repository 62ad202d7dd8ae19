/*
 * Search for the atlas: a box in the header, results under it.
 *
 * The index (search/index.js, entries [location, title, text, picture]) is loaded by a script
 * tag the first time the box is used, so pages cost nothing until then and search works from
 * file:// as over http. A result matches when every word typed begins or ends a word of its
 * title or text ("3b:84" finds mixed3b 84); whole words, beginnings and words of the title rank
 * first. Results are shown as text, with the unit's small picture.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var header = document.querySelector(".md-header__inner");
  if (!script || !header) return;
  var root = script.getAttribute("src").replace(/assets\/search\.js(\?.*)?$/, "");
  var SEPARATOR = /[\s\-=:\/.,()·]+/;
  var SHOWN = 50;

  var form = document.createElement("form");
  form.className = "wa-search";
  form.setAttribute("role", "search");
  var input = document.createElement("input");
  input.type = "search";
  input.placeholder = "Search units, labels, layers";
  input.setAttribute("aria-label", "Search the atlas");
  input.autocomplete = "off";
  input.spellcheck = false;
  var panel = document.createElement("div");
  panel.className = "wa-search__results";
  panel.hidden = true;
  form.appendChild(input);
  form.appendChild(panel);
  header.appendChild(form);

  var entries = null;
  var state = "idle"; // idle, loading, ready, failed
  var chosen = 0;

  function words(text) {
    return text.toLowerCase().split(SEPARATOR).filter(Boolean);
  }

  function load() {
    if (state !== "idle") return;
    state = "loading";
    var tag = document.createElement("script");
    tag.src = root + "search/index.js";
    tag.onload = function () {
      entries = (window.atlasSearchIndex || []).map(function (e) {
        return { location: e[0], title: e[1], text: e[2], picture: e[3] || "", titleWords: words(e[1]),
                 textWords: words(e[2]) };
      });
      state = "ready";
      show();
    };
    tag.onerror = function () {
      state = "failed";
      show();
    };
    document.head.appendChild(tag);
  }

  function score(entry, terms) {
    var total = 0;
    for (var i = 0; i < terms.length; i++) {
      var term = terms[i], best = 0;
      [[entry.titleWords, 4], [entry.textWords, 1]].forEach(function (part) {
        part[0].forEach(function (word) {
          if (word === term) best = Math.max(best, 4 * part[1]);
          else if (word.indexOf(term) === 0) best = Math.max(best, 2 * part[1]);
          else if (term.length > 1 && word.length > term.length &&
                   word.lastIndexOf(term) === word.length - term.length) best = Math.max(best, part[1]);
        });
      });
      if (!best) return 0;
      total += best;
    }
    return total;
  }

  function line(tag, className, text) {
    var element = document.createElement(tag);
    element.className = className;
    element.textContent = text;
    return element;
  }

  function show() {
    var terms = words(input.value);
    panel.textContent = "";
    if (!terms.length) {
      panel.hidden = true;
      return;
    }
    panel.hidden = false;
    if (state !== "ready") {
      panel.appendChild(line("p", "wa-search__meta", state === "failed" ? "The search index could not be loaded."
                                                                        : "Loading the search index…"));
      return;
    }
    var found = [];
    entries.forEach(function (entry, order) {
      var s = score(entry, terms);
      if (s) found.push({ entry: entry, score: s, order: order });
    });
    found.sort(function (a, b) { return b.score - a.score || a.order - b.order; });
    chosen = 0;
    panel.appendChild(line("p", "wa-search__meta", found.length ? found.length + " matching" +
      (found.length > SHOWN ? ", the first " + SHOWN + " shown" : "") : "No matching pages"));
    var list = document.createElement("ol");
    list.className = "wa-search__list";
    found.slice(0, SHOWN).forEach(function (result) {
      var item = document.createElement("li");
      var link = document.createElement("a");
      link.className = "wa-search__link";
      link.href = root + result.entry.location;
      if (result.entry.picture) {
        var picture = document.createElement("img");
        picture.className = "wa-search__picture";
        picture.src = root + result.entry.picture;
        picture.alt = "";
        picture.loading = "lazy";
        link.appendChild(picture);
      }
      link.appendChild(line("span", "wa-search__title", result.entry.title));
      link.appendChild(line("span", "wa-search__text", result.entry.text.slice(0, 160)));
      item.appendChild(link);
      list.appendChild(item);
    });
    panel.appendChild(list);
    mark();
  }

  function links() {
    return panel.querySelectorAll(".wa-search__link");
  }

  function mark() {
    Array.prototype.forEach.call(links(), function (link, i) {
      link.classList.toggle("wa-search__link--chosen", i === chosen);
    });
  }

  input.addEventListener("focus", function () { load(); show(); });
  input.addEventListener("input", function () { load(); show(); });
  input.addEventListener("keydown", function (event) {
    var all = links();
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (all.length) {
        chosen = (chosen + (event.key === "ArrowDown" ? 1 : all.length - 1)) % all.length;
        mark();
        all[chosen].scrollIntoView({ block: "nearest" });
      }
    } else if (event.key === "Escape") {
      input.value = "";
      show();
      input.blur();
    }
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var all = links();
    if (all.length) location.href = all[chosen].href;
  });
  document.addEventListener("keydown", function (event) {
    var typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
    if (event.key === "/" && !typing) {
      event.preventDefault();
      input.focus();
    }
  });
  document.addEventListener("click", function (event) {
    if (!form.contains(event.target)) panel.hidden = true;
  });
  panel.addEventListener("click", function (event) {
    if (event.target.closest(".wa-search__link")) {  // also a section of this very page
      panel.hidden = true;
      input.blur();
    }
  });
})();
