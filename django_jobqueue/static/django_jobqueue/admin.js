/* Keeps the job-queue admin pages live: every 2 s, fetch the page's JSON
   endpoint (data-jq-poll) and swap in the parts it returns. The parts are
   HTML rendered, and so escaped, by the same server templates as the page;
   nothing here builds markup from data. Paused while the tab is hidden. */
(function () {
  "use strict";
  var EVERY_MS = 2000;

  function start() {
    var root = document.querySelector("[data-jq-poll]");
    var live = document.getElementById("jq-live");
    var selectAll = document.getElementById("jq-select-all");
    if (selectAll) {
      selectAll.addEventListener("change", function () {
        document.querySelectorAll("input.action-select").forEach(function (box) {
          box.checked = selectAll.checked;
        });
      });
    }
    if (!root || !window.fetch) { return; }
    var url = root.getAttribute("data-jq-poll");

    function show(ok, text) {
      if (!live) { return; }
      live.textContent = text;
      live.className = "jq-live " + (ok ? "ok" : "down");
    }

    function tick() {
      if (document.hidden) { window.setTimeout(tick, EVERY_MS); return; }
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (data) {
          var parts = data.parts || {};
          Object.keys(parts).forEach(function (name) {
            root.querySelectorAll("[data-jq-part]").forEach(function (el) {
              if (el.getAttribute("data-jq-part") === name) { el.innerHTML = parts[name]; }
            });
          });
          show(true, "live");
        })
        .catch(function () { show(false, "not updating"); })
        .then(function () { window.setTimeout(tick, EVERY_MS); });
    }
    window.setTimeout(tick, EVERY_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
