// The sweep page, live: the user's WebSocket says "sweep.update" when a trial is queued, reports an epoch
// or ends; the page then fetches its live part again (rendered by the server, one template for both).
(function () {
  "use strict";
  var root = document.getElementById("sweep");
  if (!root) { return; }
  var sweepId = Number(root.dataset.sweep);
  var fetching = false;
  var again = false;

  function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    fetch(root.dataset.fragment, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html !== null) { root.innerHTML = html; } })
      .catch(function () {})
      .then(function () {
        fetching = false;
        if (again) { again = false; refresh(); }
      });
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + "/ws/");
    socket.addEventListener("open", refresh);  // whatever moved while the socket was down
    socket.addEventListener("message", function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (message && message.type === "sweep.update" && message.sweep === sweepId) { refresh(); }
    });
    socket.addEventListener("close", function (event) {
      if (event.code !== 1000 && event.code !== 1005) { setTimeout(connect, 2000); }
    });
  }
  connect();
})();
