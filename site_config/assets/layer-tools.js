/* Weight Atlas: filter and sort a layer page's unit grid; sort its statistics tables.
   Plain ES2017, no network, works from file://. Without .wa-layer-tools the grid is left alone. */
(function () {
  "use strict";

  function el(tag, props, kids) {
    var node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (k) { node.setAttribute(k, props[k]); });
    (kids || []).forEach(function (kid) { node.append(kid); });
    return node;
  }
  function num(text) {
    var v = parseFloat(text);
    return isNaN(v) ? -Infinity : v;
  }

  function setupGrid(tools) {
    var layer = tools.closest(".wa-layer") || document;
    var cells = Array.prototype.map.call(layer.querySelectorAll(".wa-grid .wa-cell"), function (cell, i) {
      var d = cell.dataset;
      return {
        node: cell, order: i, unit: d.unit || "", unitNum: num(d.unit),
        text: [d.label, d.family, d.branch].filter(Boolean).join("\n").toLowerCase(),
        dead: d.dead !== undefined && d.dead !== "" && d.dead !== "0" && d.dead !== "false",
        l2: num(d.l2), excitatory: num(d.excitatory), active: num(d.active),
      };
    });
    if (!cells.length) return;
    var hasActive = cells.some(function (c) { return c.node.hasAttribute("data-active"); });
    var hasDead = cells.some(function (c) { return c.node.hasAttribute("data-dead"); });
    var groups = Array.prototype.slice.call(layer.querySelectorAll(".wa-group"));
    var byUnit = {};
    cells.forEach(function (c) { byUnit[c.unit] = c; });
    var rows = Array.prototype.map.call(layer.querySelectorAll("table.wa-stats tbody tr[data-unit]"), function (tr) {
      return { node: tr, cell: byUnit[tr.dataset.unit], text: tr.textContent.toLowerCase() };
    });

    var input = el("input", { type: "search", class: "wa-filter", placeholder: "Filter: label, family, branch or unit number",
                              "aria-label": "Filter units by label, family, branch or unit number", autocomplete: "off" });
    var select = el("select", { class: "wa-sort", "aria-label": "Sort units" });
    [["unit", "Unit"], ["l2", "Input L2 (largest first)"], ["excitatory", "Excitatory share (largest first)"]]
      .concat(hasActive ? [["active", "Active on (most first)"]] : [])
      .forEach(function (o) { select.append(el("option", { value: o[0] }, [o[1]])); });
    // Dead units (they never fire on the dataset) are hidden at first, and counted.
    var hideDead = el("input", { type: "checkbox", class: "wa-hide-dead" });
    hideDead.checked = true;
    var grouped = el("input", { type: "checkbox", class: "wa-grouped" });
    grouped.checked = true;
    var count = el("span", { class: "wa-count", role: "status", "aria-live": "polite" });
    var families = layer.querySelectorAll("details.wa-family");
    tools.append(input, el("label", { class: "wa-sort-label" }, ["Sort by ", select]));
    if (families.length > 1) tools.append(el("label", { class: "wa-grouped-label" }, [grouped, " Group by family"]));
    if (hasDead) tools.append(el("label", { class: "wa-hide-dead-label" }, [hideDead, " Hide dead units"]));
    tools.append(count);
    // Without families, one grid holds the whole layer, so that a sort orders all its units.
    var flat = el("div", { class: "wa-grid wa-flat", hidden: "" });
    tools.after(flat);
    cells.forEach(function (c) { c.home = c.node.parentNode; });

    function filter() {
      var q = input.value.trim().toLowerCase(), skipDead = hasDead && hideDead.checked, shown = 0, dead = 0;
      function match(c) { return (!q || c.unit === q || c.text.indexOf(q) >= 0) && !(skipDead && c.dead); }
      cells.forEach(function (c) {
        c.visible = match(c); c.node.hidden = !c.visible;
        if (c.visible) shown++;
        if (c.dead) dead++;
      });
      groups.forEach(function (g) {
        var any = g.querySelector(".wa-cell:not([hidden])") !== null;
        g.hidden = !any;
        var det = g.closest("details");
        if (det) det.hidden = !any;
        if (q && any && det) det.open = true;
      });
      rows.forEach(function (r) {
        r.node.hidden = r.cell ? !r.cell.visible : !!q && r.text.indexOf(q) < 0;
      });
      count.textContent = shown + " of " + cells.length + " units shown" +
        (skipDead && dead ? "; " + dead + " that never fire hidden" : "");
    }
    function arrange() {
      var key = select.value, together = grouped.checked || families.length < 2;
      flat.hidden = together;
      Array.prototype.forEach.call(families, function (d) { d.style.display = together ? "" : "none"; });
      var ordered = cells.slice().sort(function (a, b) {
        var d = key === "unit" ? 0 : b[key] - a[key];
        return (d || a.unitNum - b.unitNum || a.order - b.order);
      });
      ordered.forEach(function (c) { (together ? c.home : flat).appendChild(c.node); });
    }
    function sort() {
      if (select.value !== "unit") grouped.checked = false;  // a sort orders the whole layer
      arrange();
    }
    input.addEventListener("input", filter);
    hideDead.addEventListener("change", filter);
    grouped.addEventListener("change", arrange);
    select.addEventListener("change", sort);
    filter();
  }

  function setupTable(table) {
    var heads = Array.prototype.slice.call(table.querySelectorAll("thead th"));
    var body = table.tBodies[0];
    if (!body) return;
    heads.forEach(function (th, col) {
      th.tabIndex = 0;
      th.classList.add("wa-sort-head");
      function go() {
        var numeric = th.dataset.sort === "number";
        var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
        var rows = Array.prototype.map.call(body.rows, function (tr, i) {
          var td = tr.cells[col], raw = td ? (td.hasAttribute("data-value") ? td.dataset.value : td.textContent.trim()) : "";
          return { tr: tr, i: i, key: numeric ? num(raw) : raw };
        });
        rows.sort(function (a, b) {
          var d = numeric ? (a.key === b.key ? 0 : a.key < b.key ? -1 : 1)
                          : a.key.localeCompare(b.key, undefined, { numeric: true, sensitivity: "base" });
          return d * dir || a.i - b.i;
        });
        var frag = document.createDocumentFragment();
        rows.forEach(function (r) { frag.appendChild(r.tr); });
        body.appendChild(frag);
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
      }
      th.addEventListener("click", go);
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " " || e.key === "Spacebar") { e.preventDefault(); go(); }
      });
    });
  }

  function init() {
    try {
      var tools = document.querySelector(".wa-layer-tools");
      if (tools && !tools.querySelector(".wa-filter")) setupGrid(tools);
      Array.prototype.forEach.call(document.querySelectorAll("table.wa-sortable"), setupTable);
    } catch (err) {
      if (window.console) console.warn("layer-tools:", err);
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
