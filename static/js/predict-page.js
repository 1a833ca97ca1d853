// The predict page: send an uploaded or drawn image to POST /api/v1/runs/{id}/predict/, draw the
// top classes as bars, and show the test images the model got wrong. No inline scripts (CSP).
(function () {
  "use strict";
  var root = document.getElementById("predict");
  if (!root) { return; }
  var statusEl = document.getElementById("predict-status");
  var bars = document.getElementById("predict-bars");
  var preview = document.getElementById("predict-preview");
  var fileInput = document.getElementById("predict-file");
  var csrf = document.querySelector("#predict-upload input[name=csrfmiddlewaretoken]");

  function showBars(prediction) {
    bars.textContent = "";
    prediction.top.forEach(function (item) {
      var li = document.createElement("li");
      var label = document.createElement("span");
      label.className = "predict-label";
      label.textContent = item["class"];
      var bar = document.createElement("progress");
      bar.max = 1;
      bar.value = item.probability;
      var pct = document.createElement("span");
      pct.className = "predict-pct";
      pct.textContent = (item.probability * 100).toFixed(1) + "%";
      li.append(label, bar, pct);
      bars.appendChild(li);
    });
  }

  function send(blob, name) {
    var form = new FormData();
    form.append("images", blob, name);
    statusEl.textContent = "…";
    preview.src = URL.createObjectURL(blob);
    preview.hidden = false;
    fetch(root.dataset.url + "?top=5", {
      method: "POST",
      body: form,
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrf ? csrf.value : "", "Accept": "application/json" },
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    }).then(function (answer) {
      if (!answer.ok) {
        bars.textContent = "";
        statusEl.textContent = (answer.body.error && answer.body.error.message) || root.dataset.error;
        return;
      }
      var prediction = answer.body.predictions[0];
      statusEl.textContent = prediction["class"] + " · " + (prediction.probability * 100).toFixed(1) + "%";
      showBars(prediction);
    }).catch(function () { statusEl.textContent = root.dataset.error; });
  }

  // A model that learnt light digits on black (digits, MNIST) reads a dark-on-light photo badly: offer
  // to invert an upload whose pixels are mostly light.
  var invertHint = document.getElementById("predict-invert");
  var inverted = null;
  function checkLightBackground(file) {
    invertHint.hidden = true;
    inverted = null;
    if (!root.dataset.lightOnDark) { return; }
    var img = new Image();
    img.onload = function () {
      var c = document.createElement("canvas");
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      var g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      var data = g.getImageData(0, 0, c.width, c.height);
      var sum = 0, n = data.data.length / 4;
      for (var i = 0; i < data.data.length; i += 4) {
        sum += (data.data[i] + data.data[i + 1] + data.data[i + 2]) / 3;
        data.data[i] = 255 - data.data[i];
        data.data[i + 1] = 255 - data.data[i + 1];
        data.data[i + 2] = 255 - data.data[i + 2];
      }
      if (n && sum / n > 127) {
        g.putImageData(data, 0, 0);
        inverted = c;
        invertHint.hidden = false;
      }
      URL.revokeObjectURL(img.src);
    };
    img.src = URL.createObjectURL(file);
  }
  if (fileInput) {
    fileInput.addEventListener("change", function () {
      if (fileInput.files.length) {
        send(fileInput.files[0], fileInput.files[0].name);
        checkLightBackground(fileInput.files[0]);
      }
    });
  }
  document.getElementById("predict-invert-button").addEventListener("click", function () {
    if (!inverted) { return; }
    invertHint.hidden = true;
    inverted.toBlob(function (blob) { send(blob, "inverted.png"); }, "image/png");
  });

  // Drawing: white strokes on black, like the digits the model learnt from.
  var canvas = document.getElementById("predict-canvas");
  if (canvas) {
    var ctx = canvas.getContext("2d");
    var drawing = false;
    var clear = function () { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
    clear();
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = canvas.width / 10;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    var at = function (event) {
      var rect = canvas.getBoundingClientRect();
      return [(event.clientX - rect.left) * canvas.width / rect.width, (event.clientY - rect.top) * canvas.height / rect.height];
    };
    canvas.addEventListener("pointerdown", function (event) {
      drawing = true;
      canvas.setPointerCapture(event.pointerId);
      var p = at(event);
      ctx.beginPath();
      ctx.moveTo(p[0], p[1]);
      ctx.lineTo(p[0] + 0.1, p[1]);
      ctx.stroke();
    });
    canvas.addEventListener("pointermove", function (event) {
      if (!drawing) { return; }
      var p = at(event);
      ctx.lineTo(p[0], p[1]);
      ctx.stroke();
    });
    var end = function () { drawing = false; };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    document.getElementById("predict-clear").addEventListener("click", function () {
      clear();
      bars.textContent = "";
    });
    document.getElementById("predict-draw-submit").addEventListener("click", function () {
      canvas.toBlob(function (blob) { send(blob, "drawing.png"); }, "image/png");
    });
  }

  // The grid of test images the model got wrong.
  var grid = document.getElementById("mistakes-grid");
  var mistakesStatus = document.getElementById("mistakes-status");
  fetch(root.dataset.mistakesUrl, { credentials: "same-origin", headers: { "Accept": "application/json" } })
    .then(function (response) { return response.json(); })
    .then(function (body) {
      if (body.error) { mistakesStatus.textContent = body.error.message; return; }  // e.g. a 429: when to retry
      if (!body.available) { mistakesStatus.textContent = mistakesStatus.dataset.unavailable; return; }
      if (!body.wrong) { mistakesStatus.textContent = mistakesStatus.dataset.none; return; }
      mistakesStatus.textContent = mistakesStatus.dataset.summary
        .replace("%(wrong)s", body.wrong).replace("%(samples)s", body.samples);
      body.mistakes.forEach(function (item) {
        var li = document.createElement("li");
        var img = document.createElement("img");
        img.src = item.image;
        img.alt = grid.dataset.label + " " + item.label + ", " + grid.dataset.predicted + " " + item.predicted;
        var caption = document.createElement("span");
        caption.textContent = item.label + " → " + item.predicted + " (" + (item.probability * 100).toFixed(0) + "%)";
        li.append(img, caption);
        grid.appendChild(li);
      });
    })
    .catch(function () { mistakesStatus.textContent = root.dataset.error; });
})();
