/* Weight Atlas: a kernel tile, clicked, opens large with its numbers.
   The tile is enlarged from the page's own sprite (nearest neighbour). Its numbers come from the
   unit's data file (UNIT.json: each group of connections' "kernels", int8 relative to each kernel's
   "peak", zlib-compressed in base64; a card's id is the group's "anchor" and the unit), which a
   browser lets a page read over http(s) but not from file://; there the view says where the
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

  function kernelOf(json, id) {  // promise of [height][width] of the card's kernel (its group's block times its peak), or null
    var groups = [].concat(json.inputs || [], json.outputs || [], json.further_inputs || []);
    for (var i = 0; i < groups.length; i++) {
      var g = groups[i], block = g.kernels;
      var at = block ? g.units.map(function (u) { return g.anchor + "-" + u; }).indexOf(id) : -1;
      if (at < 0) continue;
      var h = block.shape[1], w = block.shape[2], peak = g.peak[at];
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
    return Promise.resolve(null);
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
    body.append(enlarged(tile));
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
    data[url].then(function (json) { return kernelOf(json, card.id); }).then(function (kernel) {
      if (!kernel) { note.textContent = "This unit's data file does not list this kernel."; return; }
      var flat = [].concat.apply([], kernel), peak = Math.max.apply(null, flat.map(Math.abs));
      note.textContent = kernel.length + " \u00d7 " + kernel[0].length + " weights, the largest absolute " +
        peak.toPrecision(3) + ":";
      note.after(numbers(kernel, peak));
    }).catch(function () { note.textContent = "Its numbers could not be read from this unit's data file."; });
  }

  document.addEventListener("click", function (e) {
    var tile = e.target.closest && e.target.closest(".wa-card .wa-tile, .wa-channel .wa-tile");
    if (!tile || !window.HTMLDialogElement) return;
    e.preventDefault();
    show(tile.closest(".wa-card"), tile);
  });
})();
