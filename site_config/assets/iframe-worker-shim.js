/*
 * Web Workers for pages opened from file://.
 *
 * Browsers refuse `new Worker(url)` on file:// pages, which stops the theme's search.
 * There, this script replaces `Worker` with one that runs the worker's script in a hidden
 * same-origin iframe: messages go in as "message" events on the frame's window, and the
 * script's `postMessage` calls come back out as "message" events on the worker object.
 * The theme's offline plugin looks for a polyfill whose name contains "iframe-worker";
 * finding this one, it adds no script from the network. Served over http(s), the
 * browser's own Worker is left alone.
 */
(function () {
  "use strict";
  if (location.protocol !== "file:") return;

  function FrameWorker(url) {
    var target = document.createDocumentFragment(); // any EventTarget
    var worker = this;
    var pending = [];
    var loaded = false;
    var frame = document.createElement("iframe");
    frame.hidden = true;
    frame.setAttribute("aria-hidden", "true");
    (document.body || document.documentElement).appendChild(frame);
    var inner = frame.contentWindow;

    this.onmessage = null;
    this.onerror = null;
    this.addEventListener = target.addEventListener.bind(target);
    this.removeEventListener = target.removeEventListener.bind(target);

    function emit(type, init) {
      var event = type === "message" ? new MessageEvent("message", init) : new ErrorEvent("error", init);
      var handler = type === "message" ? worker.onmessage : worker.onerror;
      if (typeof handler === "function") handler.call(worker, event);
      target.dispatchEvent(event);
    }
    function deliver(data) {
      inner.dispatchEvent(new inner.MessageEvent("message", { data: data }));
    }

    inner.postMessage = function (data) {
      setTimeout(function () { emit("message", { data: data }); }, 0);
    };
    inner.importScripts = function () {
      throw new Error("importScripts is not available to workers of pages opened from file://");
    };
    inner.addEventListener("error", function (event) {
      emit("error", { message: event.message, filename: event.filename, lineno: event.lineno });
    });

    var script = inner.document.createElement("script");
    script.src = new URL(url, location.href).href;
    script.onload = function () {
      loaded = true;
      pending.splice(0).forEach(deliver);
    };
    (inner.document.body || inner.document.documentElement).appendChild(script);

    this.postMessage = function (data) {
      if (loaded) setTimeout(function () { deliver(data); }, 0);
      else pending.push(data);
    };
    this.terminate = function () {
      frame.remove();
    };
  }

  window.Worker = FrameWorker;
})();
