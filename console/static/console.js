// TMS console: keeps the terminal list live by swapping in the server-rendered
// fleet partial every data-refresh-s seconds. No framework, no external assets.
(function () {
  "use strict";

  function startLiveRefresh(container) {
    var url = container.getAttribute("data-refresh-url");
    var seconds = Number(container.getAttribute("data-refresh-s")) || 5;
    var indicator = document.getElementById("live-status");
    var stopped = false;
    var timer = null;

    function show(text, state) {
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
          container.innerHTML = html;
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

  document.addEventListener("DOMContentLoaded", function () {
    var fleet = document.getElementById("fleet");
    if (fleet) { startLiveRefresh(fleet); }
  });
})();
