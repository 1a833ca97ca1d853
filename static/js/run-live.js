// The run page, live: one WebSocket that watches this run from the last sequence number it has seen.
// Reconnects with backoff and resumes where it left off; a jump in sequence numbers (the channel layer
// drops messages over its capacity) is filled from the API before going on. Log text only ever goes
// through textContent / text nodes: a script that prints HTML shows text.
(function () {
  "use strict";
  var root = document.getElementById("run");
  if (!root) { return; }
  var runId = Number(root.dataset.run);
  var initialStatus = root.dataset.status;
  var labels = JSON.parse(document.getElementById("run-labels").textContent);
  var statusEl = document.getElementById("run-status");
  var queueEl = document.getElementById("run-queue");
  var progressEl = document.getElementById("run-progress");
  var epochEl = document.getElementById("run-epoch");
  var etaEl = document.getElementById("run-eta");
  var connEl = document.getElementById("run-connection");
  var errorEl = document.getElementById("run-error");
  var logEl = document.getElementById("run-log");
  var followEl = document.getElementById("log-follow");
  var stopForm = document.getElementById("stop-form");
  var resumeForm = document.getElementById("resume-form");
  var manageEl = document.getElementById("run-manage");
  var deviceEl = document.getElementById("run-device");
  var MAX_LOG_LINES = 5000;

  var lastSeq = 0;
  var waiting = [];      // live events that arrived after a gap, until the gap is filled
  var filling = false;
  var socket = null, attempts = 0, pingTimer = null;

  // --- Curves --------------------------------------------------------------------------------
  var epochs = {};
  JSON.parse(document.getElementById("run-epochs").textContent).forEach(function (m) { epochs[m.epoch] = m; });
  var charts = [];
  document.querySelectorAll("#run .chart[data-metric]").forEach(function (box) {
    charts.push({ box: box, chart: new window.BuildXChart(box) });
  });
  function drawCharts() {
    var rows = Object.keys(epochs).map(Number).sort(function (a, b) { return a - b; }).map(function (k) { return epochs[k]; });
    charts.forEach(function (c) {
      var m = c.box.dataset.metric;
      c.chart.draw([
        { label: c.box.dataset.labelTrain, points: rows.map(function (r) { return [r.epoch, r["train_" + m]]; }) },
        { label: c.box.dataset.labelVal, points: rows.map(function (r) { return [r.epoch, r["val_" + m]]; }) }
      ]);
    });
  }
  drawCharts();

  // --- Log -----------------------------------------------------------------------------------
  function atBottom() { return logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 8; }
  logEl.addEventListener("scroll", function () { followEl.checked = atBottom(); });
  followEl.addEventListener("change", function () { if (followEl.checked) { logEl.scrollTop = logEl.scrollHeight; } });
  function appendLines(stream, lines) {
    var frag = document.createDocumentFragment();
    lines.forEach(function (line) {
      var span = document.createElement("span");
      span.className = "log-line log-" + stream;
      span.textContent = line + "\n";
      frag.appendChild(span);
    });
    logEl.appendChild(frag);
    while (logEl.childNodes.length > MAX_LOG_LINES) { logEl.removeChild(logEl.firstChild); }
    if (followEl.checked) { logEl.scrollTop = logEl.scrollHeight; }
  }

  // --- State ---------------------------------------------------------------------------------
  function setStatus(status) {
    statusEl.textContent = labels.status[status] || status;
    statusEl.className = "status status-" + status;
    root.dataset.live = status;
    var active = status === "queued" || status === "running" || status === "interrupted";
    if (stopForm) { stopForm.hidden = !active; }
    if (manageEl) { manageEl.hidden = active; }  // archive and delete: finished runs only
    if (status !== "queued") { queueEl.textContent = ""; }
  }
  function setProgress(d) {
    if (typeof d.progress === "number") { progressEl.value = Math.round(d.progress * 100); }
    if (d.epochs) { epochEl.textContent = labels.epoch.replace("%(e)s", d.epoch || 0).replace("%(n)s", d.epochs); }
    if (typeof d.eta_seconds === "number") {
      var s = Math.max(0, Math.round(d.eta_seconds));
      etaEl.textContent = labels.eta.replace("%(t)s", s >= 90 ? Math.round(s / 60) + " min" : s + " s");
    } else if (d.eta_seconds === null) { etaEl.textContent = ""; }
  }

  var samplesEl = document.getElementById("run-samples");
  function showSample(d) {
    if (!samplesEl) { return; }
    var item = document.createElement("li");
    item.className = "sample";
    item.dataset.epoch = String(d.epoch);
    var head = document.createElement("strong");
    head.textContent = samplesEl.dataset.labelEpoch + " " + d.epoch;
    var text = document.createElement("pre");
    text.textContent = d.text || "";  // the model's text: shown as text, never as markup
    item.appendChild(head);
    item.appendChild(text);
    samplesEl.appendChild(item);
  }

  function apply(msg) {
    var d = msg.data || {};
    lastSeq = msg.seq;
    root.dataset.lastSeq = String(lastSeq);
    switch (msg.type) {
      case "run.status":
        setStatus(d.status);
        if (d.device && deviceEl) { deviceEl.textContent = " · " + d.device; deviceEl.hidden = false; }
        setProgress(d);
        if (d.status === "interrupted") { appendLines("platform", [labels.interrupted]); }
        break;
      case "run.log":
        appendLines(d.stream, d.lines || []);
        break;
      case "run.progress":
        setProgress(d);
        break;
      case "run.epoch":
        epochs[d.epoch] = d;
        setProgress({ epoch: d.epoch, epochs: d.epochs, progress: d.progress, eta_seconds: d.eta_seconds });
        drawCharts();
        break;
      case "run.sample":
        showSample(d);
        break;
      case "run.done":
        setStatus(d.status);
        etaEl.textContent = "";
        if (d.status === "succeeded") { progressEl.value = 100; }
        if (resumeForm) { resumeForm.hidden = !(d.status === "cancelled" || d.status === "failed"); }
        if (d.error) { errorEl.hidden = false; errorEl.textContent = d.error; }
        // Show the server-rendered results (metrics, confusion matrix, downloads) of a run that finished now.
        if (d.status === "succeeded" && initialStatus !== "succeeded") {
          window.setTimeout(function () { window.location.reload(); }, 800);
        }
        break;
    }
  }

  function receive(msg) {
    if (msg.seq <= lastSeq) { return; }             // already shown
    if (filling || msg.seq > lastSeq + 1) {          // a gap: fetch what is missing first
      waiting.push(msg);
      if (!filling) { fillGap(); }
      return;
    }
    apply(msg);
  }

  function fillGap() {
    filling = true;
    var upto = Math.min.apply(null, waiting.map(function (m) { return m.seq; }));
    var url = root.dataset.eventsApi + "?after=" + lastSeq + "&before=" + upto + "&limit=1000";
    fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (body) {
      body.events.forEach(function (m) { if (m.seq === lastSeq + 1) { apply(m); } });
      if (body.more) { return fillGap(); }
      filling = false;
      var queued = waiting.sort(function (a, b) { return a.seq - b.seq; });
      waiting = [];
      queued.forEach(receive);
    }).catch(function () {
      filling = false;
      window.setTimeout(function () { if (waiting.length) { fillGap(); } }, 2000);
    });
  }

  // --- Socket --------------------------------------------------------------------------------
  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + "/ws/");
    socket.onopen = function () {
      attempts = 0;
      connEl.textContent = "";
      root.dataset.connected = "1";
      socket.send(JSON.stringify({ type: "watch", run: runId, after_seq: lastSeq }));
      pingTimer = window.setInterval(function () {
        if (socket.readyState === 1) { socket.send(JSON.stringify({ type: "ping", t: Date.now() })); }
      }, 20000);
    };
    socket.onmessage = function (e) {
      var data = JSON.parse(e.data);
      // A frame holds one event or an array of consecutive events (a replay page, a live batch).
      (Array.isArray(data) ? data : [data]).forEach(function (msg) {
        if (msg.run !== runId || typeof msg.seq !== "number") { return; }
        receive(msg);
      });
    };
    socket.onclose = function (e) {
      root.dataset.connected = "0";
      window.clearInterval(pingTimer);
      attempts += 1;
      // Closed over a cap right after opening (4429: this user's tabs, 1013: the server's): say why,
      // and wait long, since onopen has just reset the backoff.
      var refused = e.code === 4429 || e.code === 1013;
      var delay = (refused ? 30000 : Math.min(30000, 500 * Math.pow(2, attempts - 1))) * (0.75 + Math.random() / 2);
      connEl.textContent = e.code === 4429 ? labels.too_many_tabs : e.code === 1013 ? labels.busy : labels.reconnecting;
      window.setTimeout(connect, delay);
    };
  }
  connect();

  // --- Buttons -------------------------------------------------------------------------------
  function post(form, after) {
    if (!form) { return; }  // an instructor's read-only view has no buttons
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
      var action = form.id === "stop-form" ? "stop/" : "resume/";
      fetch(root.dataset.api + action, { method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": token } })
        .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
        .then(function (res) {
          if (!res.ok) { errorEl.hidden = false; errorEl.textContent = res.body.error.message; return; }
          after(res.body);
        });
    });
  }
  post(stopForm, function (run) {
    if (run.status === "running") { statusEl.textContent = labels.stopping; } else { setStatus(run.status); }
  });
  post(resumeForm, function () { window.location.reload(); });
})();
