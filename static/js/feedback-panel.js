// The feedback panel of a finished run page: Apply a suggestion (a new design version, then links to
// the editor and a Train button), rate the feedback, and wait for feedback that is still being
// prepared (the page reloads once when it is ready). Texts come translated in data-label-* attributes.
(function () {
  "use strict";
  var panel = document.getElementById("feedback");
  if (!panel) { return; }
  var api = panel.dataset.api;
  var token = panel.querySelector("input[name=csrfmiddlewaretoken]").value;
  var resultEl = document.getElementById("feedback-result");

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": token },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().then(function (data) { return { ok: r.ok, data: data }; });
    });
  }

  function say(text) { if (resultEl) { resultEl.textContent = text; } }

  function failure(answer) {
    var message = answer && answer.data && answer.data.error ? answer.data.error.message : panel.dataset.labelFailed;
    say(message);
  }

  function showVersion(data) {
    var label = data.created ? panel.dataset.labelSaved : panel.dataset.labelSame;
    resultEl.textContent = label.replace("%(n)s", String(data.number)) + " ";
    var link = document.createElement("a");
    link.href = data.editor_url;
    link.id = "feedback-editor-link";
    link.textContent = panel.dataset.labelEditor;
    resultEl.appendChild(link);
    var form = document.createElement("form");
    form.method = "post";
    form.action = panel.dataset.trainUrl;
    form.className = "inline-form";
    [["csrfmiddlewaretoken", token], ["design_version", String(data.version)]].forEach(function (pair) {
      var input = document.createElement("input");
      input.type = "hidden";
      input.name = pair[0];
      input.value = pair[1];
      form.appendChild(input);
    });
    var button = document.createElement("button");
    button.type = "submit";
    button.className = "button";
    button.id = "feedback-train";
    button.textContent = panel.dataset.labelTrain;
    form.appendChild(button);
    resultEl.appendChild(document.createTextNode(" "));
    resultEl.appendChild(form);
  }

  panel.querySelectorAll(".feedback-apply").forEach(function (button) {
    button.addEventListener("click", function () {
      button.disabled = true;
      post(api + "apply/", { index: Number(button.dataset.index) }).then(function (answer) {
        button.disabled = false;
        if (answer.ok) { showVersion(answer.data); } else { failure(answer); }
      }, function () { button.disabled = false; failure(null); });
    });
  });

  // Try the top suggestions: each becomes a short run; the page shows them from the stored feedback.
  var tryButton = document.getElementById("feedback-try");
  if (tryButton) {
    tryButton.addEventListener("click", function () {
      tryButton.disabled = true;
      post(api + "try/", {}).then(function (answer) {
        if (answer.ok) { say(tryButton.dataset.labelStarted); window.location.reload(); }
        else { tryButton.disabled = false; failure(answer); }
      }, function () { tryButton.disabled = false; failure(null); });
    });
  }

  panel.querySelectorAll(".feedback-rate-button").forEach(function (button) {
    button.addEventListener("click", function () {
      post(api + "rate/", { helpful: button.dataset.helpful === "true" }).then(function (answer) {
        if (!answer.ok) { failure(answer); return; }
        panel.querySelectorAll(".feedback-rate-button").forEach(function (b) {
          b.setAttribute("aria-pressed", b === button ? "true" : "false");
        });
        say(panel.dataset.labelThanks);
      }, function () { failure(null); });
    });
  });

  // Suggestions being tried: ask the API every few seconds, reload once every trial has its result.
  var tried = document.getElementById("feedback-tried");
  if (tried && tried.dataset.trying) {
    var checks = 0;
    var watch = window.setInterval(function () {
      checks += 1;
      if (checks > 400) { window.clearInterval(watch); return; }
      fetch(api, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (body) {
        var busy = (body.tried || []).some(function (t) {
          return t.status === "waiting" || t.status === "queued" || t.status === "running";
        });
        if (!busy) { window.clearInterval(watch); window.location.reload(); }
      });
    }, 5000);
  }

  // Feedback still being prepared: ask the API every few seconds (a minute at most), reload when ready.
  if (panel.dataset.status === "pending") {
    var tries = 0;
    var timer = window.setInterval(function () {
      tries += 1;
      if (tries > 20) { window.clearInterval(timer); return; }
      fetch(api, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (body) {
        if (body.status && body.status !== "pending") { window.clearInterval(timer); window.location.reload(); }
      });
    }, 3000);
  }
}());
