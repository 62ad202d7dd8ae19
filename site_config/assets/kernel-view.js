/* Weight Atlas: a kernel tile, clicked (or a card's anchor in the address), opens large: the
   connection's view. The tile is enlarged from the page's own sprite (nearest neighbour). Its
   numbers come from the unit's data file (UNIT.json: each group of connections' "kernels", int8
   relative to each kernel's "peak", zlib-compressed in base64; a card's id is the group's
   "anchor" and the unit), and so does its measured effect in the real network ("effects",
   "effect_peak", "cosine", "ratio"), drawn beside the kernel on one colour scale. A browser lets
   a page read that file over http(s) but not from file://; there the view says where the
   numbers are. Plain ES2017 with the browser's DecompressionStream; no network beyond that file. */
(function () {
  "use strict";
  var SIDE = 360;  // CSS pixels of the enlarged tile's longer side, about
  var data = {};   // data file URL -> promise of its JSON

  function px(v) { return parseFloat(v) || 0; }

  function enlarged(tile) {
    var s = getComputedStyle(tile), w = px(s.width), h = px(s.height);
    var factor = Math.max(1, Math.floor(SIDE / Math.max(w, h)));
    var size = s.backgroundSize.split(" "), pos = s.backgroundPosition.split(" ");
    var big = document.createElement("i");
    big.className = "wa-tile wa-kernel-big";
    big.style.cssText = "width:" + w * factor + "px;height:" + h * factor + "px;background-image:" + s.backgroundImage +
      ";background-size:" + px(size[0]) * factor + "px " + px(size[1] || size[0]) * factor + "px" +
      ";background-position:" + px(pos[0]) * factor + "px " + px(pos[1]) * factor + "px";
    return big;
  }

  function numbers(values, peak) {
    var table = document.createElement("table");
    table.className = "wa-kernel-numbers";
    values.forEach(function (row) {
      var tr = table.insertRow();
      row.forEach(function (v) {
        var td = tr.insertCell();
        td.textContent = (v > 0 ? "+" : v < 0 ? "\u2212" : "") + Math.abs(v).toPrecision(2);
        var t = peak > 0 ? Math.min(1, Math.abs(v) / peak) : 0;
        td.style.background = v >= 0 ? "rgba(202,0,32," + 0.85 * t + ")" : "rgba(5,113,176," + 0.85 * t + ")";
        if (t > 0.55) td.style.color = "#fff";
      });
    });
    return table;
  }

  function inflated(block) {  // promise of a block's int8 values: zlib in base64, inflated by the browser
    var bytes = Uint8Array.from(atob(block.zlib), function (c) { return c.charCodeAt(0); });
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (b) { return new Int8Array(b); });
  }

  function rowsOf(block, at, peak) {  // promise of [height][width]: kernel ``at`` of a block, times its peak
    var h = block.shape[1], w = block.shape[2];
    return inflated(block).then(function (q) {
      var rows = [];
      for (var r = 0; r < h; r++) {
        var row = [];
        for (var c = 0; c < w; c++) row.push(q[(at * h + r) * w + c] / 127 * peak);
        rows.push(row);
      }
      return rows;
    });
  }

  function kernelOf(json, id) {  // promise of {kernel, effect, cosine, ratio} of the card's connection, or null
    var groups = [].concat(json.inputs || [], json.outputs || [], json.further_inputs || []);
    for (var i = 0; i < groups.length; i++) {
      var g = groups[i], block = g.kernels;
      var at = block ? g.units.map(function (u) { return g.anchor + "-" + u; }).indexOf(id) : -1;
      if (at < 0) continue;
      var measured = g.effects ? rowsOf(g.effects, at, g.effect_peak[at]) : Promise.resolve(null);
      var split = g.paths && g.paths[at], parts = split ? Promise.all(split.names.map(function (name, p) {
        return rowsOf(split.kernels, p, split.peaks[p]);
      })) : Promise.resolve(null);
      return Promise.all([rowsOf(block, at, g.peak[at]), measured, parts]).then(function (all) {
        return { kernel: all[0], effect: all[1], cosine: g.cosine ? g.cosine[at] : null,
                 ratio: g.ratio ? g.ratio[at] : null, paths: all[2] && { names: split.names, shares: split.shares, kernels: all[2] } };
      });
    }
    return Promise.resolve(null);
  }

  var STOPS = [[5, 113, 176], [146, 197, 222], [247, 247, 247], [244, 165, 130], [202, 0, 32]];  // RdBu, - to +

  function drawn(rows, peak, side) {  // a canvas of rows on the RdBu scale, -peak to +peak, about side px
    var h = rows.length, w = rows[0].length, cell = Math.max(1, Math.floor(side / Math.max(h, w)));
    var canvas = document.createElement("canvas");
    canvas.className = "wa-kernel-big";
    canvas.width = w * cell;
    canvas.height = h * cell;
    var context = canvas.getContext("2d");
    rows.forEach(function (row, r) {
      row.forEach(function (v, c) {
        var t = peak > 0 ? (Math.max(-1, Math.min(1, v / peak)) + 1) * 2 : 2, k = Math.min(3, Math.floor(t)), f = t - k;
        var a = STOPS[k], b = STOPS[k + 1];
        context.fillStyle = "rgb(" + [0, 1, 2].map(function (j) { return Math.round(a[j] + (b[j] - a[j]) * f); }) + ")";
        context.fillRect(c * cell, r * cell, cell, cell);
      });
    });
    return canvas;
  }

  function figure(caption, content) {
    var f = document.createElement("figure");
    f.className = "wa-kernel-figure";
    var c = document.createElement("figcaption");
    c.textContent = caption;
    f.append(content, c);
    return f;
  }

  function compared(found, big) {  // the kernel and its measured effect on one scale, with the figures, for the big tile
    var flat = [].concat.apply([], found.kernel.concat(found.effect)), peak = Math.max.apply(null, flat.map(Math.abs));
    var side = Math.min(300, (innerWidth - 120) / 2);
    var row = document.createElement("div");
    row.className = "wa-kernel-compared";
    row.append(figure("expanded weight", drawn(found.kernel, peak, side)),
               figure("measured effect", drawn(found.effect, peak, side)));
    var figures = document.createElement("p");
    figures.className = "wa-kernel-figures" + (found.cosine < 0.5 ? " wa-kernel-misleads" : "");
    figures.textContent = "On one scale (\u00b1" + peak.toPrecision(3) + "). Cosine " + found.cosine.toFixed(2) +
      ", ratio " + found.ratio.toPrecision(2) + ": " + (found.cosine >= 0.8 ? "the expanded weight holds in the real network." :
      found.cosine >= 0.5 ? "the expanded weight holds in part." :
      "the real network acts otherwise; read this connection by its measured effect.");
    big.replaceWith(row, figures);
  }

  function pathsOf(found, after) {  // each path's kernel on one scale, with its share of the expanded weight
    var p = found.paths, flat = [].concat.apply([], [].concat.apply(found.kernel, p.kernels));
    var peak = Math.max.apply(null, flat.map(Math.abs));
    var heading = document.createElement("p");
    heading.className = "wa-kernel-figures";
    heading.textContent = "The expanded weight is the sum of " + p.names.length + " paths (on one scale, \u00b1" +
      peak.toPrecision(3) + "; a share is the part of the expanded weight along the path, and shares add up to 100%):";
    var row = document.createElement("div");
    row.className = "wa-kernel-compared";
    p.names.forEach(function (name, i) {
      row.append(figure(name + ": " + Math.round(100 * p.shares[i]) + "%", drawn(p.kernels[i], peak, 120)));
    });
    after.after(heading, row);
  }

  function show(card, tile) {
    var dialog = document.createElement("dialog");
    dialog.className = "wa-kernel-view";
    var title = document.createElement("p");
    title.className = "wa-kernel-title";
    var name = card ? card.querySelector(":scope > span:nth-of-type(2)") : null;
    title.textContent = name ? "Kernel from " + (card.id.indexOf("out") === 0 ? "this unit to " : "") + name.textContent :
      "Kernel";
    var close = document.createElement("button");
    close.type = "button";
    close.className = "wa-kernel-close";
    close.textContent = "Close";
    close.addEventListener("click", function () { dialog.close(); });
    var body = document.createElement("div");
    body.className = "wa-kernel-body";
    var big = enlarged(tile);
    body.append(big);
    var note = document.createElement("p");
    note.className = "wa-kernel-note";
    body.append(note);
    dialog.append(title, body, close);
    dialog.addEventListener("close", function () { dialog.remove(); });
    dialog.addEventListener("click", function (e) { if (e.target === dialog) dialog.close(); });
    document.body.append(dialog);
    dialog.showModal();
    var link = document.querySelector("a.wa-data");
    if (!card || !link) { note.textContent = ""; return; }
    var url = link.href;
    if (location.protocol === "file:") {
      note.innerHTML = "";
      note.append("Its numbers are in this unit's ", Object.assign(document.createElement("a"), { href: url, textContent: "data file" }),
        ", which browsers do not let a page read from file://. Serve the site (make serve) to see them here.");
      return;
    }
    note.textContent = "Loading its numbers\u2026";
    data[url] = data[url] || fetch(url).then(function (r) { return r.json(); });
    data[url].then(function (json) { return kernelOf(json, card.id); }).then(function (found) {
      if (!found) { note.textContent = "This unit's data file does not list this kernel."; return; }
      var kernel = found.kernel, flat = [].concat.apply([], kernel), peak = Math.max.apply(null, flat.map(Math.abs));
      note.textContent = kernel.length + " \u00d7 " + kernel[0].length + " weights, the largest absolute " +
        peak.toPrecision(3) + ":";
      var table = numbers(kernel, peak);
      note.after(table);
      if (found.effect) compared(found, big);
      if (found.paths) pathsOf(found, table);
    }).catch(function () { note.textContent = "Its numbers could not be read from this unit's data file."; });
  }

  function fromAddress() {  // a card's anchor in the address opens its connection's view
    var card = location.hash.length > 1 ? document.getElementById(decodeURIComponent(location.hash.slice(1))) : null;
    var tile = card && card.classList.contains("wa-card") ? card.querySelector(".wa-tile") : null;
    if (tile && window.HTMLDialogElement && !document.querySelector("dialog.wa-kernel-view[open]")) show(card, tile);
  }
  window.addEventListener("hashchange", fromAddress);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fromAddress); else fromAddress();

  document.addEventListener("click", function (e) {
    var tile = e.target.closest && e.target.closest(".wa-card .wa-tile, .wa-channel .wa-tile");
    if (!tile || !window.HTMLDialogElement) return;
    e.preventDefault();
    show(tile.closest(".wa-card"), tile);
  });
})();
