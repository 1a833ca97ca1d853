// The dataset library: a zip sent in resumable chunks, then its check followed live over the WebSocket.
// A chunk that fails (a Wi-Fi blip) is retried from where the server says the upload stands.
(function () {
  "use strict";

  function csrfToken() {
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function api(method, url, body, headers) {
    var options = { method: method, credentials: "same-origin",
                    headers: Object.assign({ "Accept": "application/json", "X-CSRFToken": csrfToken() }, headers || {}) };
    if (body !== undefined) { options.body = body; }
    return fetch(url, options).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        return { status: response.status, ok: response.ok, data: data };
      });
    });
  }

  function fill(template, values) {
    return template.replace(/%\((\w+)\)s/g, function (_, key) { return String(values[key]); }).replace("%%", "%");
  }

  function wait(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  // --- Live status of one dataset over /ws/ -------------------------------------------------------------

  function follow(datasetId, onStatus) {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + "/ws/");
    socket.addEventListener("open", function () {
      socket.send(JSON.stringify({ type: "dataset", dataset: datasetId }));  // the state now, then changes
    });
    socket.addEventListener("message", function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (message && message.type === "dataset.status" && message.dataset === datasetId) {
        if (onStatus(message) === false) { socket.close(); }
      }
    });
    socket.addEventListener("close", function (event) {
      if (event.code !== 1000 && event.code !== 1005) {
        setTimeout(function () { follow(datasetId, onStatus); }, 2000);
      }
    });
    return socket;
  }

  function showCheck(message, strings, bar, text) {
    var p = message.progress || {};
    if (p.stage === "tokenising") {
      text.textContent = strings.tokenising;
    } else if (p.stage === "checking" || p.stage === "decoding") {
      bar.value = p.total ? Math.round(100 * p.done / p.total) : 0;
      text.textContent = fill(strings[p.stage], { done: p.done, total: p.total });
    } else if (p.stage === "queued") {
      text.textContent = strings.queued;
    }
  }

  // --- The upload form ----------------------------------------------------------------------------------

  var form = document.getElementById("upload-form");
  if (form) {
    var config = JSON.parse(document.getElementById("upload-config").textContent);
    var strings = config.strings;
    var bar = document.getElementById("upload-progress");
    var text = document.getElementById("upload-text");

    // A text for a language model instead of a zip of images: the tokenizer's fields instead of the side.
    var kindSelect = document.getElementById("upload-kind");
    var showKind = function () {
      var isText = kindSelect.value === "text";
      document.getElementById("upload-image-fields").hidden = isText;
      document.getElementById("upload-text-fields").hidden = !isText;
      document.getElementById("upload-file").setAttribute("accept", isText ? ".txt,text/plain" : ".zip,application/zip");
    };
    kindSelect.addEventListener("change", showKind);
    showKind();

    var sendChunks = function (dataset, file) {
      var url = dataset.upload_url;
      var failures = 0;
      function from(offset) {
        if (offset >= file.size) { return Promise.resolve(); }
        var end = Math.min(offset + config.chunk, file.size);
        return api("PUT", url, file.slice(offset, end), {
          "Content-Type": "application/octet-stream",
          "Content-Range": "bytes " + offset + "-" + (end - 1) + "/" + file.size
        }).then(function (answer) {
          if (answer.ok) {
            failures = 0;
            bar.value = Math.round(100 * answer.data.received / file.size);
            text.textContent = fill(strings.uploading, { p: bar.value });
            return from(answer.data.received);
          }
          if (answer.status === 409 && answer.data && answer.data.error && answer.data.error.received !== undefined) {
            return from(answer.data.error.received);  // the server has more (or less) than we thought
          }
          throw new Error((answer.data && answer.data.error && answer.data.error.message) || strings.failed);
        }, function () {
          // The network dropped: wait, ask where the upload stands, go on from there.
          failures += 1;
          if (failures > 30) { throw new Error(strings.failed); }
          text.textContent = fill(strings.resuming, { p: bar.value });
          return wait(Math.min(1000 * failures, 10000)).then(function () {
            return api("GET", url).then(function (answer) {
              return from(answer.ok ? answer.data.received : offset);
            }, function () { return from(offset); });
          });
        });
      }
      return from(dataset.received || 0);
    };

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var file = document.getElementById("upload-file").files[0];
      if (!file) { return; }
      var kind = document.getElementById("upload-kind").value;
      var max = kind === "text" ? config.text_max : config.max;
      if (file.size > max) { text.textContent = kind === "text" ? strings.text_too_large : strings.too_large; document.getElementById("upload-status").hidden = false; return; }
      var side = document.getElementById("upload-side").value;
      var body = { name: document.getElementById("upload-name").value, size: file.size, filename: file.name,
                   image_side: side ? parseInt(side, 10) : null };
      if (kind === "text") {
        var vocab = document.getElementById("upload-vocab").value;
        body = { name: body.name, size: file.size, filename: file.name, kind: "text",
                 tokenizer: document.getElementById("upload-tokenizer").value,
                 vocab_size: vocab ? parseInt(vocab, 10) : null };
      }
      document.getElementById("upload-status").hidden = false;
      document.getElementById("upload-submit").disabled = true;
      bar.value = 0;
      api("POST", "/api/v1/datasets/", JSON.stringify(body), { "Content-Type": "application/json" }).then(function (answer) {
        if (!answer.ok) { throw new Error((answer.data && answer.data.error && answer.data.error.message) || strings.failed); }
        var dataset = answer.data;
        form.dataset.datasetId = dataset.id;
        return sendChunks(dataset, file).then(function () {
          bar.value = 0;
          text.textContent = strings.queued;
          follow(dataset.id, function (message) {
            showCheck(message, strings, bar, text);
            if (message.status === "ready" || message.status === "rejected") {
              window.location.assign(dataset.url);
              return false;
            }
            return true;
          });
        });
      }).catch(function (error) {
        text.textContent = error.message;
        document.getElementById("upload-submit").disabled = false;
      });
    });
  }

  // --- A dataset's page while it is being checked -------------------------------------------------------

  var detail = document.getElementById("dataset-config");
  if (detail) {
    var state = JSON.parse(detail.textContent);
    if (state.status === "uploading" || state.status === "checking") {
      var checkBar = document.getElementById("check-progress");
      var checkText = document.getElementById("check-text");
      var pageStrings = { checking: checkText.textContent + " %(done)s / %(total)s", decoding: checkText.textContent + " %(done)s / %(total)s", queued: checkText.textContent };
      follow(state.dataset, function (message) {
        showCheck(message, pageStrings, checkBar, checkText);
        if (message.status === "ready" || message.status === "rejected") {
          window.location.reload();
          return false;
        }
        return true;
      });
    }
  }
})();
