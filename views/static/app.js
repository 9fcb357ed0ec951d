// widget-store: the little behaviour the pages need beyond htmx.
(function () {
  "use strict";
  // Show "reconnecting…" while the store is unreachable (for instance just
  // after the Crash button), and hide it at the first answer after that.
  // htmx keeps polling meanwhile, so the page recovers by itself.
  function setOffline(off) {
    document.body.classList.toggle("offline", off);
  }
  document.addEventListener("htmx:sendError", function () { setOffline(true); });
  document.addEventListener("htmx:timeout", function () { setOffline(true); });
  document.addEventListener("htmx:afterRequest", function (e) {
    if (e.detail && e.detail.xhr && e.detail.xhr.status > 0) setOffline(false);
  });
  // No double submit: a plain form disables its buttons once sent.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    setTimeout(function () {
      form.querySelectorAll("button").forEach(function (b) {
        b.disabled = true;
        b.setAttribute("aria-busy", "true");
      });
    }, 0);
  });
  // A page restored from the back/forward cache gets its buttons back.
  window.addEventListener("pageshow", function (e) {
    if (e.persisted) {
      document.querySelectorAll("button[aria-busy]").forEach(function (b) {
        b.disabled = false;
        b.removeAttribute("aria-busy");
      });
    }
  });
})();
