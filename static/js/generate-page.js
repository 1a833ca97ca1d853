// The generate page: POST the form to the API as an event stream and show each token as it arrives
// (generate.token), then the totals (generate.done). The model's text is inserted as text, never markup.
(function () {
  "use strict";
  var form = document.getElementById("generate-form");
  if (!form) { return; }
  var button = document.getElementById("generate-button");
  var statusEl = document.getElementById("generate-status");
  var echoEl = document.getElementById("generate-prompt-echo");
  var textEl = document.getElementById("generate-text");
  var csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  function handle(block) {
    var kind = "", data = "";
    block.split("\n").forEach(function (line) {
      if (line.indexOf("event: ") === 0) { kind = line.slice(7); }
      if (line.indexOf("data: ") === 0) { data += line.slice(6); }
    });
    if (!kind || !data) { return; }
    var d = JSON.parse(data);
    if (kind === "generate.token") {
      textEl.textContent += d.text;
      textEl.dataset.tokens = String(d.index + 1);
    } else if (kind === "generate.done") {
      form.dataset.done = "1";
      statusEl.textContent = d.tokens + " tokens, " + d.seconds.toFixed(2) + " s";
    } else if (kind === "generate.error") {
      statusEl.textContent = d.message;
    }
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var topK = parseInt(form.top_k.value, 10);
    var body = {
      prompt: form.prompt.value,
      max_new_tokens: parseInt(form.max_new_tokens.value, 10),
      temperature: parseFloat(form.temperature.value),
      top_k: isNaN(topK) ? null : topK,
      stream: true
    };
    echoEl.textContent = body.prompt;
    textEl.textContent = "";
    delete form.dataset.done;
    statusEl.textContent = "";
    button.disabled = true;
    fetch(form.dataset.url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "text/event-stream", "X-CSRFToken": csrf },
      body: JSON.stringify(body)
    }).then(function (response) {
      if (!response.ok) {
        return response.json().then(function (b) { statusEl.textContent = (b.error && b.error.message) || form.dataset.error; });
      }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) { return; }
          buffer += decoder.decode(chunk.value, { stream: true });
          var parts = buffer.split("\n\n");
          buffer = parts.pop();
          parts.forEach(handle);
          return pump();
        });
      }
      return pump();
    }).catch(function () { statusEl.textContent = form.dataset.error; })
      .then(function () { button.disabled = false; });
  });
})();
