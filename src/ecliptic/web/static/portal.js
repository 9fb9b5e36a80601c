// Ecliptic portal: small progressive enhancements. Every page works without this file.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var csrf = document.body ? document.body.getAttribute("data-csrf") : null;
  // htmx requests carry the session's form token, like every form does.
  document.addEventListener("htmx:configRequest", function (e) {
    if (csrf) { e.detail.headers["X-CSRF-Token"] = csrf; }
  });
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t && t.hasAttribute && t.hasAttribute("data-autosubmit") && t.form) { t.form.submit(); }
  });
  // A live timeline: server-sent events, or polling where EventSource is missing or fails.
  function follow(list) {
    var url = list.getAttribute("data-stream");
    var poll = list.getAttribute("data-poll");
    var seen = {};
    list.scrollTop = list.scrollHeight;
    Array.prototype.forEach.call(list.querySelectorAll("li[data-id]"), function (li) {
      seen[li.getAttribute("data-id")] = true;
    });
    function add(ev) {
      if (seen[ev.id]) { return; }
      seen[ev.id] = true;
      var li = document.createElement("li");
      li.setAttribute("data-id", ev.id);
      if (ev.kind === "warning") { li.className = "warning-event"; }
      var t = document.createElement("time");
      t.textContent = ev.at;
      li.appendChild(t);
      li.appendChild(document.createTextNode(ev.message));
      list.appendChild(li);
      list.scrollTop = list.scrollHeight;
    }
    function phase(p) {
      var el = document.getElementById("phase");
      if (el && p && el.getAttribute("data-phase") !== p.phase) {
        // The page around the timeline (services, actions) changes with the phase.
        window.location.reload();
      }
    }
    function pollOnce() {
      fetch(poll, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (d) {
          if (!d) { return; }
          d.events.forEach(add);
          phase(d);
        })
        .catch(function () {});
    }
    if (window.EventSource && url) {
      var es = new EventSource(url);
      es.addEventListener("event", function (m) { add(JSON.parse(m.data)); });
      es.addEventListener("phase", function (m) { phase(JSON.parse(m.data)); });
      es.onerror = function () {
        if (es.readyState === EventSource.CLOSED) { setInterval(pollOnce, 3000); }
      };
    } else if (poll) {
      setInterval(pollOnce, 3000);
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-stream],[data-poll]"), follow);
  });
})();
