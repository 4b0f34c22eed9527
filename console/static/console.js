// TMS console: keeps live parts of a page fresh by swapping in server-rendered
// partials (any element with data-refresh-url, every data-refresh-s seconds), and asks
// before a form with data-confirm is sent. No framework, no external assets.
(function () {
  "use strict";

  function startLiveRefresh(container) {
    var url = container.getAttribute("data-refresh-url");
    var seconds = Number(container.getAttribute("data-refresh-s")) || 5;
    var indicatorId = container.getAttribute("data-indicator") || "live-status";
    var stopped = false;
    var timer = null;

    function show(text, state) {
      // Looked up each time: the indicator may live inside the swapped partial.
      var indicator = document.getElementById(indicatorId);
      if (!indicator) { return; }
      indicator.textContent = text;
      indicator.className = "live live-" + state;
    }

    function schedule() {
      if (!stopped) { timer = window.setTimeout(refresh, seconds * 1000); }
    }

    function refresh() {
      timer = null;
      // A hidden tab does not poll; it refreshes as soon as it is shown again.
      if (document.hidden) { return; }
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          // Signed out meanwhile: the partial redirects to the sign-in page.
          if (response.redirected || response.status === 401) {
            stopped = true;
            show("Signed out: reload the page to sign in again", "stale");
            return null;
          }
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          if (html === null) { return; }
          // Keep an open <details> open across the swap.
          var open = Array.prototype.map.call(
            container.querySelectorAll("details[open][id]"), function (d) { return d.id; });
          // Rows ticked for a bulk action stay ticked across the swap.
          var ticked = Array.prototype.map.call(
            container.querySelectorAll("input[type=checkbox][id]:checked"),
            function (c) { return c.id; });
          container.innerHTML = html;
          open.forEach(function (id) {
            var details = document.getElementById(id);
            if (details) { details.open = true; }
          });
          ticked.forEach(function (id) {
            var box = document.getElementById(id);
            if (box) { box.checked = true; }
          });
          show("Live · updated " + new Date().toLocaleTimeString(), "ok");
        })
        .catch(function () {
          show("Cannot reach the console, retrying…", "stale");
        })
        .then(schedule);
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && timer === null && !stopped) { refresh(); }
    });
    schedule();
  }

  // Delegated, so forms inside swapped partials ask too. A form that asks carries a
  // hidden "confirmed" field; the server asks on a page of its own when it is not "yes".
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) { return; }
    var question = form.getAttribute("data-confirm");
    if (!question) { return; }
    if (!window.confirm(question)) {
      event.preventDefault();
      return;
    }
    var confirmed = form.querySelector('input[name="confirmed"]');
    if (confirmed) { confirmed.value = "yes"; }
  });

  // The bulk form shows only the arguments of the command chosen (all without script).
  function showChosenArguments(form) {
    var chosen = form.querySelector('input[name="name"]:checked');
    Array.prototype.forEach.call(form.querySelectorAll("fieldset[data-for]"), function (set) {
      var mine = chosen !== null && set.getAttribute("data-for") === chosen.value;
      set.hidden = !mine;
      set.disabled = !mine;  // a hidden field is not sent either
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(
      document.querySelectorAll("[data-refresh-url]"), startLiveRefresh);
    Array.prototype.forEach.call(document.querySelectorAll("form.bulk-choose"), function (form) {
      showChosenArguments(form);
      form.addEventListener("change", function () { showChosenArguments(form); });
    });
  });
})();
