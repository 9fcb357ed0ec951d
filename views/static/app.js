// widget-store: the little behaviour the pages need beyond htmx.
(function () {
  "use strict";
  var body = document.body;

  // ----- connection state -----
  // "Reconnecting…" shows while the store does not answer: after the Crash
  // button (whose request dies with the process), or when a poll fails. htmx
  // keeps polling meanwhile (a failed poll does not stop "every 1s"), so the
  // page recovers by itself at the first answer. The banner stays up at
  // least MIN_SHOWN ms so that a restart of a few milliseconds is still
  // seen, then "Back online" shows for a few seconds.
  // body.dataset.reconnects counts the outages, for tests and curious users.
  var MIN_SHOWN = 1500;
  var offlineSince = 0, crashing = false, timer = null, outages = 0;

  function goOffline() {
    if (!body.classList.contains("offline")) {
      offlineSince = Date.now();
      outages++;
      body.dataset.reconnects = String(outages);
    }
    clearTimeout(timer);
    body.classList.remove("reconnected");
    body.classList.add("offline");
  }
  function goOnline() {
    if (crashing || !body.classList.contains("offline")) return;
    clearTimeout(timer);
    timer = setTimeout(function () {
      body.classList.remove("offline");
      body.classList.add("reconnected");
      body.dataset.online = String(Date.now());
      timer = setTimeout(function () { body.classList.remove("reconnected"); }, 4000);
    }, Math.max(0, offlineSince + MIN_SHOWN - Date.now()));
  }
  function isCrash(e) { return e.detail && e.detail.elt && e.detail.elt.hasAttribute("data-crash"); }

  document.addEventListener("htmx:beforeRequest", function (e) {
    if (isCrash(e)) { crashing = true; goOffline(); }
  });
  // The Crash button names the process run it means to crash (the latest the
  // timeline reported): the browser may resend the request after the
  // connection dies, and the restarted store must not take that as a second
  // press (see handleDemoCrash).
  document.addEventListener("htmx:configRequest", function (e) {
    if (!isCrash(e)) return;
    var el = document.querySelector("[data-current-run]");
    var run = el && el.getAttribute("data-current-run");
    if (run && run !== "0") e.detail.parameters.run = run;
  });
  document.addEventListener("htmx:sendError", function (e) {
    if (isCrash(e)) crashing = false; // the request died with the process, as it should
    goOffline();
  });
  document.addEventListener("htmx:timeout", goOffline);
  document.addEventListener("htmx:afterRequest", function (e) {
    var xhr = e.detail && e.detail.xhr;
    if (!xhr || xhr.status === 0) return;
    if (isCrash(e)) {
      // An answer instead of a dead connection: 409 is the browser's resend
      // reaching the restarted store (the crash happened); anything else is
      // a refusal, such as a missing admin token.
      crashing = false;
      if (xhr.status >= 400 && xhr.status !== 409) alert("The store refused to crash: " + (xhr.responseText || xhr.status));
    }
    goOnline();
  });

  // ----- live stock: the Buy button follows it -----
  function syncBuy() {
    var stock = document.querySelector("[data-testid=stock]");
    var buy = document.querySelector("[data-testid=buy]");
    if (!stock || !buy || buy.form.dataset.busy) return;
    var soldOut = stock.getAttribute("data-inventory") === "0";
    buy.disabled = soldOut;
    buy.textContent = soldOut ? "Sold out" : buy.getAttribute("data-label");
  }
  document.addEventListener("htmx:afterSwap", syncBuy);

  // ----- forms: no double submit, safe retry -----
  // A form marked data-safe-retry posts with fetch. Its request is idempotent
  // (the checkout key is in the form or the URL), so when the store is
  // unreachable (restarting) it is retried until it answers; an error answer
  // is shown next to the button with the server's message, and the button
  // comes back as "Try again" (same key: never a second order). Without
  // JavaScript the forms post natively.
  function setBusy(form, busy, label) {
    if (busy) form.dataset.busy = "1"; else delete form.dataset.busy;
    form.querySelectorAll("button").forEach(function (b) {
      b.disabled = busy;
      if (busy) {
        b.setAttribute("aria-busy", "true");
        b.innerHTML = '<span class="spinner" aria-hidden="true"></span> Working…';
      } else {
        b.removeAttribute("aria-busy");
        b.textContent = label || b.getAttribute("data-label") || b.textContent;
      }
    });
  }
  function showError(form, msg, link) {
    var p = form.querySelector(".form-error");
    if (!p) { alert(msg); return; }
    p.textContent = msg;
    if (link) {
      var a = document.createElement("a");
      a.href = link.href;
      a.textContent = link.text;
      a.setAttribute("data-testid", "current-state");
      p.appendChild(a);
    }
    p.hidden = false;
  }
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.hasAttribute("data-safe-retry") || !window.fetch) {
      // Native submit: disable the buttons once the browser has the form data.
      setTimeout(function () { setBusy(form, true); }, 0);
      return;
    }
    e.preventDefault();
    if (form.dataset.busy) return;
    var data = new URLSearchParams(new FormData(form));
    var err = form.querySelector(".form-error");
    if (err) err.hidden = true;
    setBusy(form, true);
    var tries = 0;
    (function send() {
      // X-Store-Script: the store answers a destination on another site
      // (Stripe's checkout, which fetch cannot follow to) in X-Store-Go-To.
      fetch(form.action, { method: "POST", body: data, headers: { Accept: "text/html", "X-Store-Script": "1" }, credentials: "same-origin" })
        .then(function (resp) {
          goOnline();
          if (resp.ok) { location.assign(resp.headers.get("X-Store-Go-To") || resp.url); return; }
          return resp.text().then(function (html) {
            var doc = new DOMParser().parseFromString(html, "text/html");
            var m = doc.querySelector("[data-testid=error-message]");
            var msg = m ? m.textContent.trim() : "The store answered " + resp.status;
            if (!/[.!?]$/.test(msg)) msg += ".";
            if (resp.status >= 500) {
              // A failure on our side: the same request again is safe.
              showError(form, msg + " Trying again is safe: it is the same order.");
              setBusy(form, false, "Try again");
              return;
            }
            // The page is out of date (say, paid in another tab): offer the
            // page as it is now rather than the same request again.
            showError(form, msg + " ", { href: location.href, text: "See the current state" });
            setBusy(form, false);
          });
        }, function () {
          goOffline();
          tries++;
          if (tries < 40) { setTimeout(send, Math.min(250 * tries, 2000)); return; }
          showError(form, "We can't reach the store right now. Nothing was lost: try again in a moment. It is the same order, never a second one.");
          setBusy(form, false, "Try again");
        });
    })();
  });

  // ----- the cart -----
  // The cart lives in this browser (localStorage), not in the store: a
  // reload, a new tab or a crash of the store keeps it, and the store holds
  // no stock and writes nothing until Check out, which posts the whole cart
  // with the form's one-time key (the store holds every line or none). The
  // cart is emptied once the pay page shows the order its key made; a cart
  // that sold out stays, to be changed and checked out again.
  var CART = "widget-store.cart", CART_KEY = "widget-store.cart-key";
  function loadCart() {
    try {
      var c = JSON.parse(localStorage.getItem(CART) || "[]");
      return Array.isArray(c) ? c : [];
    } catch (err) { return []; }
  }
  function saveCart(c) {
    try { localStorage.setItem(CART, JSON.stringify(c)); } catch (err) { /* private mode: the cart lives as long as the page */ }
    renderCart(c);
  }
  function money(cents) { return "$" + Math.floor(cents / 100) + "." + String(cents % 100).padStart(2, "0"); }
  function clampQty(v) { v = parseInt(v, 10); return isNaN(v) ? 1 : Math.max(1, Math.min(10, v)); }
  function cell(tr, text) { var td = document.createElement("td"); td.textContent = text; tr.appendChild(td); return td; }
  function renderCart(c) {
    var box = document.querySelector("[data-testid=cart]");
    if (!box) return;
    var table = box.querySelector("[data-testid=cart-lines]"), tbody = table.querySelector("tbody");
    tbody.textContent = "";
    var total = 0;
    c.forEach(function (l) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-testid", "cart-line");
      tr.setAttribute("data-product-id", String(l.product_id));
      cell(tr, l.name);
      cell(tr, money(l.price_cents));
      var q = document.createElement("input");
      q.type = "number"; q.min = "1"; q.max = "10"; q.value = String(l.quantity); q.className = "qty";
      q.setAttribute("data-testid", "cart-qty");
      q.setAttribute("aria-label", "Quantity of " + l.name);
      cell(tr, "").appendChild(q);
      cell(tr, money(l.quantity * l.price_cents));
      var rm = document.createElement("button");
      rm.type = "button"; rm.className = "button"; rm.textContent = "Remove";
      rm.setAttribute("data-testid", "cart-remove");
      cell(tr, "").appendChild(rm);
      tbody.appendChild(tr);
      total += l.quantity * l.price_cents;
    });
    var empty = c.length === 0;
    box.querySelector("[data-testid=cart-empty]").hidden = !empty;
    table.hidden = empty;
    box.querySelector("[data-testid=cart-total-line]").hidden = empty;
    box.querySelector("[data-testid=cart-total]").textContent = money(total);
    var form = box.querySelector("[data-cart-form]");
    form.querySelector("[data-cart-field]").value = empty ? "" : JSON.stringify({
      items: c.map(function (l) { return { product_id: l.product_id, quantity: l.quantity }; })
    });
    var btn = form.querySelector("[data-testid=cart-checkout]");
    if (!form.dataset.busy) btn.disabled = empty;
  }
  document.addEventListener("click", function (e) {
    var add = e.target.closest && e.target.closest("[data-add-to-cart]");
    if (add) {
      var item = add.closest("[data-product-id]");
      var id = parseInt(item.getAttribute("data-product-id"), 10);
      var qty = clampQty(item.querySelector("[data-testid=add-qty]").value);
      var c = loadCart(), line = c.filter(function (l) { return l.product_id === id; })[0];
      if (line) line.quantity = Math.min(10, line.quantity + qty);
      else c.push({ product_id: id, name: item.getAttribute("data-name"), price_cents: parseInt(item.getAttribute("data-price-cents"), 10), quantity: qty });
      saveCart(c);
      return;
    }
    var rm = e.target.closest && e.target.closest("[data-testid=cart-remove]");
    if (rm) {
      var pid = parseInt(rm.closest("[data-product-id]").getAttribute("data-product-id"), 10);
      saveCart(loadCart().filter(function (l) { return l.product_id !== pid; }));
    }
  });
  document.addEventListener("change", function (e) {
    if (!e.target.matches || !e.target.matches("[data-testid=cart-qty]")) return;
    var pid = parseInt(e.target.closest("[data-product-id]").getAttribute("data-product-id"), 10);
    var c = loadCart();
    c.forEach(function (l) { if (l.product_id === pid) l.quantity = clampQty(e.target.value); });
    saveCart(c);
  });
  // Check out: remember which key carries the cart; the pay page of that
  // key's order empties it.
  document.addEventListener("submit", function (e) {
    if (!e.target.hasAttribute || !e.target.hasAttribute("data-cart-form")) return;
    try { localStorage.setItem(CART_KEY, e.target.querySelector("[name=key]").value); } catch (err) { /* see saveCart */ }
  }, true);
  (function () {
    var placed = document.querySelector("[data-placed-key]");
    var key = null;
    try { key = localStorage.getItem(CART_KEY); } catch (err) { /* see saveCart */ }
    if (placed && key && placed.getAttribute("data-placed-key") === key) {
      try { localStorage.removeItem(CART); localStorage.removeItem(CART_KEY); } catch (err) { /* see saveCart */ }
    }
  })();
  renderCart(loadCart());
  window.addEventListener("storage", function (e) { if (e.key === CART) renderCart(loadCart()); });

  // ----- polling pauses in hidden tabs -----
  // Every polled fragment (hx-trigger "every Ns") skips its request while the
  // tab is hidden and resumes at its next tick once it is shown. This is done
  // here rather than with an htmx trigger filter ("[!document.hidden]"),
  // which htmx evaluates with eval: the Content-Security-Policy forbids it.
  // htmx:confirm comes before any other event of a request, and cancelling
  // it sends nothing.
  document.addEventListener("htmx:confirm", function (e) {
    var elt = e.detail && e.detail.elt;
    if (!document.hidden || !elt || !elt.getAttribute) return;
    if (/\bevery\b/.test(elt.getAttribute("hx-trigger") || "")) e.preventDefault();
  });

  // Buttons that reload the page (the error page's Try again): a handler
  // here, not an inline onclick, which the CSP forbids.
  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest("[data-reload]");
    if (b) location.reload();
  });

  // A page restored from the back/forward cache gets its buttons back.
  window.addEventListener("pageshow", function (e) {
    if (!e.persisted) return;
    document.querySelectorAll("form[data-busy]").forEach(function (f) { setBusy(f, false); });
    syncBuy();
  });
})();
