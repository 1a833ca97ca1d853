// The block editor: a column of blocks kept in one spec object, checked by the server on every change.
//
// The page is server-rendered; this script builds the palette from GET /api/v1/catalog/, keeps the
// spec (docs/contracts.md section 5), re-renders the column after structural edits, and asks
// POST /api/v1/designs/validate/ (debounced) for shapes, parameter counts and issues, which it shows
// on the block they belong to. Strings come translated from the page (json_script, not executed).
(function () {
  "use strict";

  var F = window.BuildXForms;
  var el = F.el;
  var root = document.getElementById("editor");
  if (!root) { return; }

  var boot = JSON.parse(document.getElementById("editor-state").textContent);
  var T = JSON.parse(document.getElementById("editor-strings").textContent);
  var lang = boot.lang;
  var urls = boot.urls;

  // Settings a block shows without opening "more settings".
  var MAIN_PARAMS = ["out_channels", "kernel_size", "stride", "padding", "out_features", "p", "output_size",
                     "scale_factor", "negative_slope", "dim", "shape", "n_embd", "n_head", "embedding_dim",
                     "hidden_size", "tie_weights"];
  var TASK_IMAGE = "image_classification";
  var TASK_LM = "language_model";
  // A blank design of each task starts on these (designs/views.py blank_spec).
  var FIRST_DATASET = { image_classification: "digits", language_model: "addition" };
  var DEFAULT_MODEL_NAME = { image_classification: "MyCNN", language_model: "MyGPT" };
  var VALIDATE_DELAY_MS = 250;

  var S = {
    catalog: null,
    types: {},            // type -> catalog entry
    transforms: {},
    spec: normaliseLocal(boot.spec),
    history: [],
    index: -1,
    savedJson: null,
    version: boot.version,  // {number, id} of the latest saved version
    report: null,
    fieldErrors: {},
    selected: null,       // uid of the selected block (keyboard inserts go after it)
    partsOpen: {},        // uid -> true: the TransformerBlocks whose parts are shown
    validateSeq: 0,
    validateTimer: null,
    uidCounter: 0,
    artifact: null,       // the code Train uses (the select's choice)
    artifacts: {},        // id -> artifact: the version's code that can train
    compiled: null,
    codeVersion: null,    // the version number the Code tab shows
    waiting: null,        // {id, number}: the AI's artifact being written
    pollTimer: null,
    socket: null
  };

  function csrfToken() {
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function api(method, url, body) {
    var options = { method: method, credentials: "same-origin",
                    headers: { "Accept": "application/json", "X-CSRFToken": csrfToken() } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(url, options).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        return { status: response.status, ok: response.ok, data: data };
      });
    });
  }

  // --- The spec -----------------------------------------------------------------------------------

  // The spec's task is kept: an image design leaves it out (the server's default), a language model says so.
  function normaliseLocal(spec) {
    spec = spec && typeof spec === "object" ? spec : {};
    var task = spec.task === TASK_LM ? TASK_LM : TASK_IMAGE;
    var out = { model_name: spec.model_name || DEFAULT_MODEL_NAME[task] };
    if (task !== TASK_IMAGE) { out.task = task; }
    out.dataset = spec.dataset || FIRST_DATASET[task];
    out.preprocessing = Array.isArray(spec.preprocessing) ? spec.preprocessing : [];
    out.layers = Array.isArray(spec.layers) ? spec.layers : [];
    out.hyperparameters = spec.hyperparameters && typeof spec.hyperparameters === "object" ? spec.hyperparameters : {};
    return out;
  }

  function task() {
    return S.spec.task || TASK_IMAGE;
  }

  function isLm() {
    return task() === TASK_LM;
  }

  function taskInfo(id) {
    var wanted = id || task();
    return (S.catalog ? S.catalog.tasks : []).find(function (t) { return t.id === wanted; }) || null;
  }

  // A block or a setting belongs to the design's task when its catalog entry says so (no list: every task).
  function forTask(entry) {
    return !entry.tasks || entry.tasks.indexOf(task()) >= 0;
  }

  // The spec without the editor's own bookkeeping (uids), as the server should see it.
  function specJson(spec) {
    return JSON.stringify(spec || S.spec, function (key, value) { return key === "_uid" ? undefined : value; });
  }

  function eachLayer(layers, fn, parentPath) {
    layers.forEach(function (layer, i) {
      var path = (parentPath ? parentPath + "." : "") + "layers[" + i + "]";
      fn(layer, path, layers, i);
      if (Array.isArray(layer.layers)) { eachLayer(layer.layers, fn, path); }
    });
  }

  function ensureUids() {
    eachLayer(S.spec.layers, function (layer) {
      if (!layer._uid) { layer._uid = "b" + (++S.uidCounter); }
    });
  }

  function findByUid(uid) {
    var found = null;
    eachLayer(S.spec.layers, function (layer, path, list, index) {
      if (layer._uid === uid) { found = { layer: layer, path: path, list: list, index: index }; }
    });
    return found;
  }

  function usedNames() {
    var names = {};
    eachLayer(S.spec.layers, function (layer) { if (layer.name) { names[layer.name] = true; } });
    return names;
  }

  function freshName(type) {
    var entry = S.types[type];
    var prefix = entry ? entry.prefix : type.toLowerCase();
    var names = usedNames();
    var n = 1;
    while (names[prefix + n]) { n++; }
    return prefix + n;
  }

  // The image datasets, or the texts of a language model (built-in corpora, then the user's own).
  function datasetChoices() {
    if (!S.catalog) { return []; }
    return isLm() ? S.catalog.corpora : S.catalog.datasets;
  }

  function datasetInfo() {
    var wanted = String(S.spec.dataset || "").toLowerCase().replace(/[\s_-]/g, "");
    return datasetChoices().find(function (d) {
      return d.name.toLowerCase().replace(/[\s_-]/g, "") === wanted;
    }) || null;
  }

  // A language model's vocabulary: the last check's figure (it knows the tokenizer), else the corpus's.
  function vocabSize() {
    if (S.report && S.report.dataset && S.report.dataset.vocab_size && S.report.dataset.name === S.spec.dataset) {
      return S.report.dataset.vocab_size;
    }
    var info = datasetInfo();
    return info ? info.vocab_size : null;
  }

  // What a head must give: a score per class of the images, or per token of the vocabulary.
  function headSize() {
    if (isLm()) { return vocabSize(); }
    var info = datasetInfo();
    return info ? info.num_classes : null;
  }

  function newLayer(type) {
    var entry = S.types[type];
    var layer = { type: type, name: freshName(type) };
    (entry ? entry.params : []).forEach(function (p) {
      if (p.inferred || p.kind === "layers" || !forTask(p)) { return; }
      if (p["default"] !== undefined) { layer[p.name] = p["default"]; }
    });
    // Sensible starting values for the settings PyTorch has no default for.
    if (type === "Conv2d" || type === "ConvTranspose2d") { layer.out_channels = 16; }
    if (type === "Linear") { layer.out_features = headSize() || 10; }
    // Sequence blocks: a width that suits a tiny model (the other sizes are inferred from the block before).
    if (type === "Conv1d") { layer.out_channels = 64; }
    if (type === "LSTM" || type === "GRU") { layer.hidden_size = 64; }
    if (type === "Embedding") { layer.embedding_dim = 64; }
    if (type === "Residual") { layer.layers = []; }
    if (type === "Input") { delete layer.shape; }
    layer._uid = "b" + (++S.uidCounter);
    return layer;
  }

  function cloneLayer(layer) {
    var copy = JSON.parse(specJson(layer));
    var names = usedNames();
    (function rename(l) {
      var entry = S.types[l.type];
      var prefix = entry ? entry.prefix : l.type.toLowerCase();
      var n = 1;
      while (names[prefix + n]) { n++; }
      l.name = prefix + n;
      names[l.name] = true;
      l._uid = "b" + (++S.uidCounter);
      if (Array.isArray(l.layers)) { l.layers.forEach(rename); }
    })(copy);
    return copy;
  }

  // --- History (undo / redo before saving) ----------------------------------------------------------

  function pushHistory() {
    var json = specJson();
    if (S.history[S.index] === json) { return; }
    S.history = S.history.slice(0, S.index + 1);
    S.history.push(json);
    if (S.history.length > 200) { S.history.shift(); }
    S.index = S.history.length - 1;
    updateUndoButtons();
  }

  function restore(json) {
    S.spec = normaliseLocal(JSON.parse(json));
    ensureUids();
    renderAll();
    scheduleValidate(0);
  }

  function undo() {
    if (specJson() !== S.history[S.index]) { pushHistory(); }
    if (S.index <= 0) { return; }
    S.index -= 1;
    restore(S.history[S.index]);
    updateUndoButtons();
  }

  function redo() {
    if (S.index >= S.history.length - 1) { return; }
    S.index += 1;
    restore(S.history[S.index]);
    updateUndoButtons();
  }

  function updateUndoButtons() {
    document.getElementById("undo").disabled = S.index <= 0;
    document.getElementById("redo").disabled = S.index >= S.history.length - 1;
    updateSaveState();
  }

  function updateSaveState(message) {
    var node = document.getElementById("save-state");
    if (message) { node.textContent = message; return; }
    var dirty = specJson() !== S.savedJson;
    node.textContent = dirty ? T.not_saved : "";
    root.setAttribute("data-dirty", dirty ? "true" : "false");
  }

  // A structural change: re-render, remember it for undo, check it.
  function changed() {
    ensureUids();
    renderColumn();
    pushHistory();
    scheduleValidate();
  }

  // A value typed into a field: no re-render (keeps the focus), check it; remember it once committed.
  function edited(committed) {
    if (committed) { pushHistory(); } else { updateSaveState(); }
    scheduleValidate();
  }

  // --- Palette ------------------------------------------------------------------------------------

  function renderPalette() {
    var box = document.getElementById("palette");
    box.textContent = "";
    // A language model's own blocks come first: a beginner starts a GPT with TokenAndPosition.
    var groups = S.catalog.groups.slice().sort(function (a, b) {
      return isLm() ? (b.id === "sequence") - (a.id === "sequence") : 0;
    });
    groups.forEach(function (group) {
      // Only the blocks of the design's task: a language model has no Conv2d, an image classifier no attention.
      var layers = S.catalog.layers.filter(function (l) { return l.group === group.id && forTask(l); });
      if (!layers.length) { return; }
      var list = el("ul", { className: "palette-list", "data-group": group.id });
      layers.forEach(function (entry) {
        var help = entry.help[lang] || entry.help.en;
        var add = el("button", { type: "button", className: "palette-add",
                                 "aria-label": F.format(T.add_to_column, { type: entry.type }), text: "+" });
        add.addEventListener("click", function () { insertNew(entry.type); });
        list.appendChild(el("li", { className: "palette-item", "data-new-type": entry.type, title: help }, [
          el("span", { className: "palette-name", text: entry.type }),
          add,
          el("span", { className: "palette-help", text: help })
        ]));
      });
      var details = el("details", { className: "palette-group", open: true }, [
        el("summary", { text: group.label[lang] || group.label.en }), list
      ]);
      box.appendChild(details);
      if (window.Sortable) {
        window.Sortable.create(list, {
          group: { name: "blocks", pull: "clone", put: false }, sort: false, forceFallback: true,
          fallbackOnBody: true, filter: ".palette-add", preventOnFilter: false
        });
      }
    });
  }

  // Keyboard and click insert: inside the selected Residual block, else after the selected block,
  // else at the end of the column.
  function insertNew(type) {
    var layer = newLayer(type);
    var sel = S.selected ? findByUid(S.selected) : null;
    if (sel && sel.layer.type === "Residual") {
      sel.layer.layers = sel.layer.layers || [];
      sel.layer.layers.push(layer);
    } else if (sel) {
      sel.list.splice(sel.index + 1, 0, layer);
    } else {
      S.spec.layers.push(layer);
    }
    S.selected = layer._uid;
    changed();
    focusBlock(layer._uid);
  }

  // --- Column -------------------------------------------------------------------------------------

  function focusBlock(uid) {
    var node = root.querySelector('.block[data-uid="' + uid + '"]');
    if (node) { node.focus(); }
  }

  function removeReferences(name) {
    eachLayer(S.spec.layers, function (layer) {
      if (layer.input === name) { delete layer.input; }
      else if (Array.isArray(layer.input)) {
        layer.input = layer.input.filter(function (n) { return n !== name; });
      }
    });
  }

  function blockAction(uid, action) {
    var found = findByUid(uid);
    if (!found) { return; }
    var list = found.list;
    var i = found.index;
    var focusUid = uid;
    if (action === "up" && i > 0) {
      list.splice(i - 1, 0, list.splice(i, 1)[0]);
    } else if (action === "down" && i < list.length - 1) {
      list.splice(i + 1, 0, list.splice(i, 1)[0]);
    } else if (action === "duplicate") {
      var copy = cloneLayer(found.layer);
      list.splice(i + 1, 0, copy);
      focusUid = copy._uid;
    } else if (action === "delete") {
      list.splice(i, 1);
      removeReferences(found.layer.name);
      var next = list[i] || list[i - 1];
      focusUid = next ? next._uid : null;
      if (S.selected === uid) { S.selected = null; }
    } else {
      return;
    }
    changed();
    if (focusUid) {
      var button = root.querySelector('.block[data-uid="' + focusUid + '"] [data-action="' + action + '"]');
      if (button && !button.disabled) { button.focus(); } else { focusBlock(focusUid); }
    }
  }

  function inputControl(layer, index, list) {
    var entry = S.types[layer.type];
    var earlier = list.slice(0, index).map(function (l) { return l.name; });
    if (entry && entry.inputs === "many") {
      var chosen = Array.isArray(layer.input) ? layer.input : [];
      var box = el("fieldset", { className: "inputs-many" }, [el("legend", { text: T.inputs_from })]);
      ["x"].concat(earlier).forEach(function (name) {
        var id = "in-" + layer._uid + "-" + name;
        var check = el("input", { type: "checkbox", id: id, value: name, checked: chosen.indexOf(name) >= 0 });
        check.addEventListener("change", function () {
          var current = Array.isArray(layer.input) ? layer.input.slice() : [];
          if (check.checked) { current.push(name); } else { current = current.filter(function (n) { return n !== name; }); }
          layer.input = current;
          changed();
        });
        box.appendChild(el("span", { className: "check" }, [check, el("label", { "for": id, text: name === "x" ? T.input_model : name })]));
      });
      return box;
    }
    var id = "in-" + layer._uid;
    var select = el("select", { id: id, className: "input-select" });
    select.appendChild(el("option", { value: "", text: T.input_previous }));
    select.appendChild(el("option", { value: "x", text: T.input_model, selected: layer.input === "x" }));
    earlier.forEach(function (name) {
      select.appendChild(el("option", { value: name, text: name, selected: layer.input === name }));
    });
    select.addEventListener("change", function () {
      if (select.value) { layer.input = select.value; } else { delete layer.input; }
      changed();
    });
    return el("div", { className: "field field-input" }, [el("label", { "for": id, text: T.input_from }), select]);
  }

  function renderBlock(layer, path, index, list, depth) {
    var entry = S.types[layer.type] || { params: [], help: { en: "" }, inputs: "one" };
    var li = el("li", { className: "block block-" + layer.type.toLowerCase(), tabindex: "-1",
                        "data-uid": layer._uid, "data-type": layer.type, "data-path": path,
                        "aria-label": layer.name + " (" + layer.type + ")" });
    if (S.selected === layer._uid) { li.classList.add("selected"); }
    var tools = el("div", { className: "block-tools" });
    [["up", "↑", T.move_up, index === 0], ["down", "↓", T.move_down, index === list.length - 1],
     ["duplicate", "⊞", T.duplicate, false], ["delete", "✕", T.delete, false]].forEach(function (b) {
      var button = el("button", { type: "button", className: "tool tool-" + b[0], "data-action": b[0],
                                  "aria-label": b[2] + ": " + layer.name, title: b[2], disabled: b[3], text: b[1] });
      button.addEventListener("click", function (event) { event.stopPropagation(); blockAction(layer._uid, b[0]); });
      tools.appendChild(button);
    });
    var head = el("div", { className: "block-head" }, [
      el("span", { className: "handle", "aria-hidden": "true", text: "⠿" }),
      el("span", { className: "block-type", text: layer.type }),
      el("span", { className: "block-name", text: layer.name }),
      el("span", { className: "block-out" }, [
        el("span", { className: "block-shape", "data-shape": "" }),
        el("span", { className: "block-params" })
      ]),
      tools
    ]);
    li.appendChild(head);
    var body = el("div", { className: "block-body" });
    // The input choice sits in view when it says something (a merge, an explicit input), else with
    // the other settings: most blocks simply take the block before them.
    var inputBox = null;
    if (depth === 0 && (index > 0 || entry.inputs === "many") && layer.type !== "Input") {
      inputBox = inputControl(layer, index, list);
      if (entry.inputs === "many" || layer.input !== undefined) { body.appendChild(inputBox); inputBox = null; }
    }
    var main = el("div", { className: "param-form" });
    var more = el("div", { className: "param-form" });
    entry.params.forEach(function (param) {
      if (param.kind === "layers" || !forTask(param)) { return; }
      var node = F.field(param, layer, { lang: lang, strings: T, onChange: edited });
      (MAIN_PARAMS.indexOf(param.name) >= 0 || param.required ? main : more).appendChild(node);
    });
    if (main.childNodes.length) { body.appendChild(main); }
    body.appendChild(el("details", { className: "more-settings" }, [
      el("summary", { text: T.block_help }), el("p", { className: "field-help", text: entry.help[lang] || entry.help.en }),
      inputBox, more.childNodes.length ? more : null
    ]));
    li.appendChild(body);
    li.appendChild(el("ul", { className: "block-issues" }));
    if (layer.type === "Residual") {
      layer.layers = layer.layers || [];
      var inner = el("ol", { className: "block-column inner-column", "data-parent": layer._uid,
                             "aria-label": T.residual_inner + ": " + layer.name });
      layer.layers.forEach(function (child, j) {
        inner.appendChild(renderBlock(child, path + ".layers[" + j + "]", j, layer.layers, depth + 1));
      });
      li.appendChild(el("div", { className: "inner-wrap" }, [
        el("p", { className: "muted small", text: T.drop_inside }), inner
      ]));
      makeSortable(inner);
    }
    if (layer.type === "TransformerBlock") { li.appendChild(partsBox(layer)); }
    li.addEventListener("focusin", function (event) {
      event.stopPropagation();
      select(layer._uid);
    });
    li.addEventListener("click", function (event) {
      event.stopPropagation();
      select(layer._uid);
    });
    return li;
  }

  // A TransformerBlock opens, read-only, into its parts. The list is filled from each validation report
  // (renderParts); whether it is open is kept by uid, so it stays open across re-renders.
  function partsBox(layer) {
    var listId = "parts-" + layer._uid;
    var list = el("ol", { className: "block-parts", id: listId, hidden: !S.partsOpen[layer._uid],
                          "aria-label": F.format(T.parts_of, { name: layer.name }) });
    var button = el("button", { type: "button", className: "button small parts-toggle", "aria-controls": listId });
    var show = function () {
      var open = !!S.partsOpen[layer._uid];
      button.setAttribute("aria-expanded", open ? "true" : "false");
      button.textContent = open ? T.hide_parts : T.show_parts;
      list.hidden = !open;
    };
    button.addEventListener("click", function () {
      if (S.partsOpen[layer._uid]) { delete S.partsOpen[layer._uid]; } else { S.partsOpen[layer._uid] = true; }
      show();
    });
    show();
    return el("div", { className: "block-parts-box" }, [button, list]);
  }

  // ln_1 → attention → + residual → ln_2 → MLP → + residual, each with what the report says of it.
  function renderParts(list, row) {
    list.textContent = "";
    var parts = row && row.status === "ok" ? row.parts || [] : [];
    if (!parts.length) {
      list.appendChild(el("li", { className: "block-part part-unknown muted", text: T.parts_unknown }));
      return;
    }
    parts.forEach(function (part) {
      var attr = part.name.slice(part.name.lastIndexOf(".") + 1);
      var type = part.type + (part.heads ? " (" + F.format(T.part_heads, { n: part.heads }) + ")" : "");
      list.appendChild(el("li", { className: "block-part", "data-part": attr, title: part.name }, [
        el("span", { className: "part-name", text: attr }),
        el("span", { className: "part-type", text: type }),
        el("span", { className: "part-shape", text: F.humanShape(part.output_shape) }),
        el("span", { className: "part-params", text: F.humanNumber(part.params) + " " + T.params })
      ]));
      if (part.type === "CausalSelfAttention" || part.type === "MLP") {  // x + part(ln(x))
        list.appendChild(el("li", { className: "block-part part-residual", "data-part": "residual" }, [
          el("span", { className: "part-name", text: T.part_residual }),
          el("span", { className: "part-shape", text: F.humanShape(part.output_shape) }),
          el("span", { className: "part-params" })
        ]));
      }
    });
  }

  function select(uid) {
    if (S.selected === uid) { return; }
    S.selected = uid;
    root.querySelectorAll(".block.selected").forEach(function (node) { node.classList.remove("selected"); });
    var node = root.querySelector('.block[data-uid="' + uid + '"]');
    if (node) { node.classList.add("selected"); }
  }

  function makeSortable(list) {
    if (!window.Sortable) { return; }
    window.Sortable.create(list, {
      group: { name: "blocks", pull: true, put: true }, animation: 120, forceFallback: true, fallbackOnBody: true,
      swapThreshold: 0.6, invertSwap: true, handle: ".block-head", draggable: ".block, .palette-item",
      filter: "button, input, select, label, summary", preventOnFilter: false, emptyInsertThreshold: 24,
      onAdd: commitFromDomSoon, onEnd: commitFromDomSoon
    });
  }

  // Sortable moved DOM nodes: read the new order back into the spec, then re-render from the spec.
  var commitPending = false;
  function commitFromDomSoon() {
    if (commitPending) { return; }
    commitPending = true;
    window.setTimeout(function () {
      commitPending = false;
      var byUid = {};
      eachLayer(S.spec.layers, function (layer) { byUid[layer._uid] = layer; });
      var added = null;
      var read = function (list) {
        var layers = [];
        Array.prototype.forEach.call(list.children, function (item) {
          if (item.getAttribute("data-new-type")) {
            var layer = newLayer(item.getAttribute("data-new-type"));
            added = layer;
            layers.push(layer);
          } else if (item.getAttribute("data-uid") && byUid[item.getAttribute("data-uid")]) {
            var existing = byUid[item.getAttribute("data-uid")];
            if (existing.type === "Residual") {
              var inner = item.querySelector(":scope > .inner-wrap > .inner-column");
              existing.layers = inner ? read(inner) : (existing.layers || []);
            }
            layers.push(existing);
          }
        });
        return layers;
      };
      S.spec.layers = read(document.getElementById("column"));
      if (added) { S.selected = added._uid; }
      changed();
      if (added) { focusBlock(added._uid); }
    }, 0);
  }

  function renderColumn() {
    var column = document.getElementById("column");
    column.textContent = "";
    S.spec.layers.forEach(function (layer, i) {
      column.appendChild(renderBlock(layer, "layers[" + i + "]", i, S.spec.layers, 0));
    });
    column.setAttribute("data-empty", S.spec.layers.length ? "false" : "true");
    column.setAttribute("data-hint", T.drop_here);
    if (S.report) { renderReport(); }
  }

  // --- Validation ---------------------------------------------------------------------------------

  function scheduleValidate(delay) {
    window.clearTimeout(S.validateTimer);
    root.setAttribute("data-validating", "true");
    S.validateTimer = window.setTimeout(validate, delay === undefined ? VALIDATE_DELAY_MS : delay);
  }

  function validate() {
    var seq = ++S.validateSeq;
    var body = JSON.parse(specJson());
    api("POST", urls.validate, body).then(function (res) {
      if (seq !== S.validateSeq) { return; } // a newer check is on its way
      if (res.status === 200) {
        S.report = res.data.report;
        S.fieldErrors = {};
      } else if (res.status === 400 && res.data && res.data.error) {
        S.fieldErrors = res.data.error.fields || {};
        S.fieldErrorMessage = res.data.error.message;
      } else {
        S.fieldErrors = { "": [T.network_error] };
      }
      renderReport();
      root.setAttribute("data-validating", "false");
    }).catch(function () {
      if (seq !== S.validateSeq) { return; }
      S.fieldErrors = { "": [T.network_error] };
      renderReport();
      root.setAttribute("data-validating", "false");
    });
  }

  function issueItem(issue, severity) {
    var li = el("li", { className: "issue issue-" + severity, "data-code": issue.code || "" }, [
      el("strong", { text: (severity === "error" ? T.error : severity === "blocker" ? T.blocker : T.warning) + ": " }),
      el("span", { className: "issue-message", text: issue.message })
    ]);
    if (issue.hint) { li.appendChild(el("span", { className: "issue-hint", text: " " + issue.hint })); }
    if (issue.fix) {
      var button = el("button", { type: "button", className: "button small fix", text: issue.fix.label || T.fix });
      button.addEventListener("click", function () { applyFix(issue.fix); });
      li.appendChild(button);
    }
    return li;
  }

  // A fix is a list of edits in the vocabulary of designs/edits.py. The server carries them out (the
  // same applier as feedback's suggestions) and answers the edited spec, normalised: the editor keeps no
  // applier of its own. Blocks keep their uids by name, so the selection survives the round trip.
  function applyFix(fix) {
    var sent = specJson();
    window.clearTimeout(S.validateTimer);
    S.validateSeq++;  // a check still on its way speaks for the spec before the fix
    root.setAttribute("data-validating", "true");
    api("POST", urls.edit, { spec: JSON.parse(sent), edits: fix.edits || [] }).then(function (res) {
      if (specJson() !== sent) { scheduleValidate(0); return; }  // changed meanwhile: the user's edit wins
      if (res.status !== 200 || !res.data || !res.data.spec) {
        var error = res.data && res.data.error;
        var fields = error && error.fields ? Object.keys(error.fields).map(function (k) { return error.fields[k].join(" "); }) : [];
        updateSaveState(fields.length ? fields.join(" ") : (error ? error.message : T.network_error));
        scheduleValidate(0);
        return;
      }
      var uids = {};
      eachLayer(S.spec.layers, function (layer) { if (layer.name) { uids[layer.name] = layer._uid; } });
      S.spec = normaliseLocal(res.data.spec);
      eachLayer(S.spec.layers, function (layer) { if (uids[layer.name]) { layer._uid = uids[layer.name]; } });
      ensureUids();
      renderAll();  // every form reads the new spec object (as after undo)
      pushHistory();
      scheduleValidate();
    }).catch(function () {
      updateSaveState(T.network_error);
      scheduleValidate(0);
    });
  }

  function blockNode(path) {
    return root.querySelector('.block[data-path="' + path + '"]');
  }

  function renderReport() {
    var report = S.report;
    var rows = {};
    if (report) { report.layers.forEach(function (row) { rows[row.path] = row; }); }
    var designIssues = document.getElementById("design-issues");
    designIssues.textContent = "";
    root.querySelectorAll(".block-issues").forEach(function (node) { node.textContent = ""; });
    root.querySelectorAll(".field-error").forEach(function (node) { node.textContent = ""; });
    root.querySelectorAll(".field.invalid").forEach(function (node) { node.classList.remove("invalid"); });
    var hasFieldErrors = Object.keys(S.fieldErrors).length > 0;

    root.querySelectorAll("#column .block").forEach(function (node) {
      var row = rows[node.getAttribute("data-path")];
      var shape = node.querySelector(".block-shape");
      var params = node.querySelector(".block-params");
      var parts = node.querySelector(":scope > .block-parts-box > .block-parts");
      node.classList.remove("status-ok", "status-error", "status-blocked", "status-stale");
      if (!row || hasFieldErrors) {
        node.classList.add("status-stale");
        if (!row) {
          shape.textContent = ""; params.textContent = "";
          if (parts) { renderParts(parts, null); }
        }
        return;
      }
      if (parts) { renderParts(parts, row); }
      node.classList.add("status-" + row.status);
      shape.textContent = row.status === "ok" ? F.humanShape(row.output_shape)
        : (row.status === "blocked" ? T.blocked : "✕");
      params.textContent = row.params ? F.humanNumber(row.params) + " " + T.params : "";
      node.querySelectorAll(":scope > .block-body [data-inferred]").forEach(function (input) {
        var name = input.getAttribute("data-inferred");
        var value = row.inferred ? row.inferred[name] : undefined;
        input.placeholder = value !== undefined ? String(value) : "";
        var note = input.parentNode.querySelector(".field-note");
        if (note) { note.textContent = value !== undefined ? F.format(T.inferred_value, { value: value }) : T.inferred; }
      });
    });

    if (report && !hasFieldErrors) {
      // Blockers: the design is fine but over a limit of this server (designs/limits.py), so Train would
      // refuse it. They come first, above the column, with the limit and what to change.
      [["blocker", report.blockers || []], ["error", report.errors], ["warning", report.warnings]].forEach(function (pair) {
        pair[1].forEach(function (issue) {
          var node = issue.path && issue.path.indexOf("layers[") === 0 ? blockNode(issue.path) : null;
          var list = node ? node.querySelector(":scope > .block-issues") : designIssues;
          list.appendChild(issueItem(issue, pair[0]));
          if (node && issue.field) {
            var f = node.querySelector(':scope > .block-body [data-param="' + issue.field + '"]');
            if (f && pair[0] === "error") { f.classList.add("invalid"); }
          }
          var hp = /^hyperparameters\.(\w+)$/.exec(issue.path || "");
          var hpField = hp ? document.querySelector('#hyperparameters [data-param="' + hp[1] + '"]') : null;
          if (hpField && pair[0] !== "warning") {
            hpField.classList.add("invalid");
            hpField.querySelector(".field-error").textContent = issue.message;
          }
        });
      });
    }
    // A 400: settings the server could not read, tied to their field where there is one.
    Object.keys(S.fieldErrors).forEach(function (path) {
      var messages = S.fieldErrors[path];
      var m = /^(layers\[\d+\](?:\.layers\[\d+\])*)(?:\.(\w+))?$/.exec(path);
      var hp = /^hyperparameters\.(\w+)$/.exec(path);
      var field = null;
      if (m && blockNode(m[1])) {
        field = m[2] ? blockNode(m[1]).querySelector(':scope > .block-body [data-param="' + m[2] + '"]') : null;
        if (!field) {
          messages.forEach(function (msg) {
            blockNode(m[1]).querySelector(":scope > .block-issues").appendChild(issueItem({ message: msg }, "error"));
          });
          return;
        }
      } else if (hp) {
        field = document.querySelector('#hyperparameters [data-param="' + hp[1] + '"]');
      }
      if (field) {
        field.classList.add("invalid");
        field.querySelector(".field-error").textContent = messages.join(" ");
      } else {
        messages.forEach(function (msg) { designIssues.appendChild(issueItem({ message: msg }, "error")); });
      }
    });

    renderSummary();
    renderTotals();
    renderDiagram();
    renderLinks();
  }

  // The Code tab says, beside Train, why this server will not train what is on screen.
  function renderTrainBlockers() {
    var box = document.getElementById("train-blockers");
    var blockers = S.report && !Object.keys(S.fieldErrors).length ? (S.report.blockers || []) : [];
    box.textContent = "";
    box.hidden = !blockers.length;
    root.setAttribute("data-trainable", blockers.length ? "false" : "true");
    blockers.forEach(function (issue) {
      box.appendChild(el("li", { "data-code": issue.code, text: issue.message + " " + issue.hint }));
    });
  }

  function renderSummary() {
    renderTrainBlockers();
    var node = document.getElementById("summary");
    var report = S.report;
    node.className = "summary";
    if (Object.keys(S.fieldErrors).length) {
      node.textContent = S.fieldErrorMessage || T.save_failed;
      node.classList.add("summary-error");
      return;
    }
    if (!report) { node.textContent = T.checking; return; }
    document.getElementById("input-shape").textContent = isLm() && report.input_shape
      ? F.format(T.token_ids, { t: report.input_shape[0] }) : F.humanShape(report.input_shape);
    if (report.errors.length) {
      node.textContent = F.format(T.has_errors, { n: report.errors.length });
      node.classList.add("summary-error");
    } else if ((report.blockers || []).length) {
      node.textContent = T.not_trainable;
      node.classList.add("summary-error");
    } else if (report.ready_to_train) {
      node.textContent = T.ready;
      node.classList.add("summary-ok");
    } else {
      node.textContent = T.not_ready;
      node.classList.add("summary-warn");
    }
  }

  function renderTotals() {
    var box = document.getElementById("totals");
    box.textContent = "";
    var report = S.report;
    if (!report) { return; }
    var items = [
      [T.params, F.humanNumber(report.totals.params)],
      // A language model's cost is told per token (the validation's per_token), as for nanoGPT.
      report.per_token ? [T.macs_per_token, F.humanNumber(report.per_token.macs)] : ["MACs", F.humanNumber(report.totals.macs)],
      [T.memory + " (batch " + report.memory.batch_size + ")", F.humanBytes(report.memory.total_bytes)],
      [T.output, F.humanShape(report.output_shape)]
    ];
    items.forEach(function (item) {
      box.appendChild(el("dt", { text: item[0] }));
      box.appendChild(el("dd", { text: item[1], "data-total": item[0] }));
    });
  }

  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  // Boxes side by side, one per top-level block; height follows the feature map's height (or a thin
  // bar for flat features), width a little with the channels.
  function renderDiagram() {
    var box = document.getElementById("diagram");
    while (box.firstChild) { box.removeChild(box.firstChild); }
    var report = S.report;
    if (!report || !report.input_shape) { return; }
    var stages = [{ name: "x", shape: report.input_shape }];
    report.layers.forEach(function (row) {
      if (row.parent === null && row.status === "ok" && row.output_shape) {
        stages.push({ name: row.name, shape: row.output_shape });
      }
    });
    var maxH = 1;
    stages.forEach(function (s) { if (s.shape.length === 3) { maxH = Math.max(maxH, s.shape[1]); } });
    var x = 4;
    var height = 140;
    var mid = 70;
    // The feature count a box stands for: channels of an image map, C of a sequence (T, C), the features
    // of a flat vector (or the T token ids of a language model's input).
    var features = function (shape) { return shape.length === 2 ? shape[1] : shape[0]; };
    stages.forEach(function (s) {
      var h = s.shape.length === 3 ? Math.max(6, 110 * s.shape[1] / maxH)
        : s.shape.length === 2 ? 10 + Math.min(90, Math.log2(features(s.shape) + 1) * 8)
        : 6 + Math.min(40, Math.log2(s.shape[0] + 1) * 3);
      var w = s.shape.length === 3 ? Math.min(26, 6 + Math.log2(s.shape[0] + 1) * 2.5) : 8;
      var rect = svg("rect", { x: x, y: mid - h / 2, width: w, height: h, rx: 2,
                               "class": s.shape.length === 3 ? "map" : s.shape.length === 2 ? "sequence" : "flat" });
      rect.appendChild(svg("title", {}, s.name + ": " + F.humanShape(s.shape)));
      box.appendChild(rect);
      box.appendChild(svg("text", { x: x + w / 2, y: height - 2, "text-anchor": "middle", "class": "diagram-label" },
                          s.shape.length === 3 ? String(s.shape[1]) : String(features(s.shape))));
      x += w + 6;
    });
    box.setAttribute("viewBox", "0 0 " + Math.max(x, 100) + " " + height);
    box.setAttribute("width", Math.max(x, 100));
    box.setAttribute("height", height);
  }

  // Links beside the column: a curve from each source to each block that does not simply take the
  // block before it (an explicit input, Add/Concat branches).
  function renderLinks() {
    var box = document.getElementById("links");
    while (box.firstChild) { box.removeChild(box.firstChild); }
    var report = S.report;
    var column = document.getElementById("column");
    if (!report) { return; }
    var wrap = box.parentNode.getBoundingClientRect();
    box.setAttribute("height", Math.max(1, wrap.height));
    var top = function (node) { return node.getBoundingClientRect().top - wrap.top; };
    var topLevel = report.layers.filter(function (row) { return row.parent === null; });
    var yOf = {};
    var inputNode = box.parentNode.querySelector(".input-node");
    yOf.x = top(inputNode) + inputNode.offsetHeight / 2;
    var lane = 0;
    topLevel.forEach(function (row, i) {
      var node = column.querySelector(':scope > .block[data-path="' + row.path + '"]');
      if (!node) { return; }
      var y = top(node) + 16;
      var previous = i === 0 ? "x" : topLevel[i - 1].name;
      (row.inputs || []).forEach(function (source) {
        if (source === previous && row.inputs.length === 1) { return; }
        if (yOf[source] === undefined) { return; }
        var depth = 10 + (lane++ % 3) * 8;
        box.appendChild(svg("path", {
          d: "M 40 " + yOf[source] + " C " + (40 - depth * 2) + " " + yOf[source] + ", " + (40 - depth * 2) + " " + y + ", 40 " + y,
          "class": "link", "data-from": source, "data-to": row.name
        }));
        box.appendChild(svg("circle", { cx: 40, cy: y, r: 3, "class": "link-end" }));
      });
      yOf[row.name] = top(node) + node.offsetHeight - 12;
    });
  }

  // --- Dataset, preprocessing, hyperparameters ------------------------------------------------------

  function renderDataset() {
    var select = document.getElementById("dataset");
    select.textContent = "";
    var current = datasetInfo();
    var lm = isLm();
    datasetChoices().forEach(function (d) {
      var text = (d.title || d.name) + (lm ? " (" + F.format(T.vocab, { n: d.vocab_size }) + ")"
        : " (" + d.input_shape.join("×") + ", " + d.num_classes + ")");
      if (d.available === false) { text += " — " + T.not_installed; }
      select.appendChild(el("option", { value: d.name, text: text, selected: current && current.name === d.name }));
    });
    var info = datasetInfo();
    var help = !info ? "" : (info.available === false ? info.message : ((info.help && (info.help[lang] || info.help.en)) || ""));
    if (info && lm && info.sample_prompt) { help += " " + F.format(T.sample_prompt, { prompt: info.sample_prompt }); }
    document.getElementById("dataset-help").textContent = help;
    document.getElementById("data-title").textContent = lm ? T.data_title_lm : T.data_title_image;
    document.getElementById("diagram-help").textContent = lm ? T.diagram_help_lm : T.diagram_help_image;
    // A language model has no images to show and no image preprocessing.
    document.getElementById("preprocessing-box").hidden = lm;
    var none = document.getElementById("preprocessing-none");
    none.hidden = !lm;
    none.textContent = lm ? T.no_preprocessing_lm : "";
    var img = document.getElementById("dataset-samples");
    if (lm) { img.hidden = true; img.removeAttribute("src"); return; }
    if (info) {
      var src = info.samples_url || urls.samples.replace("{name}", encodeURIComponent(info.name));
      if (img.getAttribute("src") !== src) { img.hidden = true; img.setAttribute("src", src); }
    }
  }

  // The task switch: one radio per task of the catalog, with the chosen task's help below.
  function renderTask() {
    var box = document.getElementById("task-options");
    box.textContent = "";
    S.catalog.tasks.forEach(function (t) {
      var id = "task-" + t.id;
      var radio = el("input", { type: "radio", name: "task", id: id, value: t.id, checked: t.id === task() });
      radio.addEventListener("change", function () { if (radio.checked) { switchTask(t.id); } });
      box.appendChild(el("label", { "for": id }, [radio, t.label[lang] || t.label.en]));
    });
    var info = taskInfo();
    document.getElementById("task-help").textContent = info ? (info.help[lang] || info.help.en) : "";
    root.setAttribute("data-task", task());
  }

  // Switching the task keeps the blocks (the user's work): those of the other task are marked by the check
  // with what to use instead, and Undo switches back. The dataset, preprocessing and hyperparameters of
  // the task left are kept aside in the page, so switching back brings them back too.
  function switchTask(id) {
    if (id === task()) { return; }
    var before = task();
    S.asideByTask = S.asideByTask || {};
    S.asideByTask[before] = { dataset: S.spec.dataset, preprocessing: S.spec.preprocessing,
                              hyperparameters: S.spec.hyperparameters, model_name: S.spec.model_name };
    var aside = S.asideByTask[id] || {};
    var name = S.spec.model_name === DEFAULT_MODEL_NAME[before] ? (aside.model_name || DEFAULT_MODEL_NAME[id]) : S.spec.model_name;
    var spec = normaliseLocal({ model_name: name, task: id, dataset: aside.dataset || FIRST_DATASET[id],
                                preprocessing: aside.preprocessing || [], layers: S.spec.layers,
                                hyperparameters: aside.hyperparameters || {} });
    S.spec = spec;
    S.report = null;
    // A setting only one task has (a Linear's tie_weights) goes with that task.
    eachLayer(S.spec.layers, function (layer) {
      var entry = S.types[layer.type];
      (entry ? entry.params : []).forEach(function (p) { if (!forTask(p)) { delete layer[p.name]; } });
    });
    var label = taskInfo().label[lang] || taskInfo().label.en;
    var wrong = 0;
    eachLayer(S.spec.layers, function (layer) { if (S.types[layer.type] && !forTask(S.types[layer.type])) { wrong++; } });
    renderAll();
    pushHistory();
    scheduleValidate(0);
    updateSaveState(F.format(wrong ? T.task_switched_blocks : T.task_switched, { task: label }));
  }

  function renderPreprocessing() {
    var list = document.getElementById("preprocessing");
    list.textContent = "";
    S.spec.preprocessing.forEach(function (step, i) {
      var entry = S.transforms[step.type] || { params: [], help: { en: "" } };
      var remove = el("button", { type: "button", className: "tool", "aria-label": T.remove + ": " + step.type, text: "✕" });
      remove.addEventListener("click", function () {
        S.spec.preprocessing.splice(i, 1);
        renderPreprocessing();
        pushHistory();
        scheduleValidate();
      });
      var form = el("div", { className: "param-form" });
      entry.params.forEach(function (param) {
        form.appendChild(F.field(param, step, { lang: lang, strings: T, onChange: edited }));
      });
      list.appendChild(el("li", { className: "transform", "data-path": "preprocessing[" + i + "]" }, [
        el("div", { className: "block-head" }, [el("span", { className: "block-type", text: step.type }),
          el("span", { className: "muted small", text: entry.random ? " (train only)" : "" }), remove]),
        el("p", { className: "field-help", text: entry.help[lang] || entry.help.en }),
        form
      ]));
    });
  }

  function renderHyperparameters() {
    var box = document.getElementById("hyperparameters");
    box.textContent = "";
    var info = taskInfo();
    (info ? info.hyperparameters : S.catalog.hyperparameters).forEach(function (param) {
      box.appendChild(F.field(param, S.spec.hyperparameters, { lang: lang, strings: T, onChange: edited }));
    });
  }

  function renderAll() {
    document.getElementById("model-name").value = S.spec.model_name;
    if (root.getAttribute("data-task") !== task()) { renderPalette(); }
    renderTask();
    renderColumn();
    renderDataset();
    renderPreprocessing();
    renderHyperparameters();
  }

  // --- Save, versions, import / export ---------------------------------------------------------------

  function save() {
    saveSpec();
  }

  // Save what is on screen as a new version (or find it unchanged). Resolves to {ok, number, valid,
  // ready} when saved, {ok: false} when not (the reason is shown in the save state and on the fields).
  function saveSpec() {
    var button = document.getElementById("save");
    button.disabled = true;
    updateSaveState(T.saving);
    var json = specJson();
    var request = boot.design.id ? api("POST", urls.versions, { spec: JSON.parse(json) }) : createDesign(json);
    return request.then(function (res) {
      button.disabled = false;
      if (res.status === 201 || res.status === 200) {
        if (!S.version || S.version.number !== res.data.number) { S.version = { number: res.data.number, id: null }; }
        S.savedJson = json;
        document.getElementById("version-badge").textContent = F.format(T.version, { n: res.data.number });
        if (res.status === 201) {
          addHistoryRow(res.data.number);
          // The new version is the user's own edit, not the applied suggestion.
          var origin = document.getElementById("version-origin");
          if (origin) { origin.hidden = true; }
        }
        updateSaveState(F.format(res.status === 201 ? T.saved : T.unchanged, { n: res.data.number }));
        root.setAttribute("data-saved-version", res.data.number);
        return { ok: true, number: res.data.number, valid: res.data.valid, ready: res.data.ready_to_train };
      }
      if (res.data && res.data.error) {
        var fields = {};
        Object.keys(res.data.error.fields || {}).forEach(function (key) {
          fields[key.replace(/^spec\./, "")] = res.data.error.fields[key];
        });
        S.fieldErrors = fields;
        renderReport();
        updateSaveState(T.save_failed);
        return { ok: false, message: T.save_failed };
      }
      updateSaveState(T.network_error);
      return { ok: false, message: T.network_error };
    }).catch(function () {
      button.disabled = false;
      updateSaveState(T.network_error);
      return { ok: false, message: T.network_error };
    });
  }

  // A blank design lives only in this page until its first save: that save creates it (with its version 1)
  // in one request, and the page takes the new design's URLs, as if it had been opened from the server.
  function createDesign(json) {
    return api("POST", urls.create, { name: boot.design.name, spec: JSON.parse(json) }).then(function (res) {
      if (res.status !== 201 || !res.data || !res.data.latest_version) { return res; }
      var id = res.data.id;
      boot.design.id = id;
      Object.keys(urls).forEach(function (key) {
        if (typeof urls[key] === "string") { urls[key] = urls[key].replace("/designs/0/", "/designs/" + id + "/"); }
      });
      var path = window.location.pathname.replace(/\/designs\/new\/?$/, "/designs/" + id + "/");
      window.history.replaceState(null, "", path);
      root.setAttribute("data-design", String(id));
      var latest = res.data.latest_version;
      S.version = { number: latest.number, id: latest.id };
      return { status: 201, ok: true, data: latest };
    });
  }

  function addHistoryRow(number) {
    var list = document.getElementById("history");
    var empty = list.querySelector("li.muted");
    if (empty) { empty.remove(); }
    var open = el("button", { type: "button", className: "link-button", "data-load-version": number, text: T.open });
    list.insertBefore(el("li", { "data-number": number }, [
      el("span", { text: F.format(T.version, { n: number }) }), " ", open
    ]), list.firstChild);
  }

  function loadVersion(number) {
    api("GET", urls.version.replace("{n}", number)).then(function (res) {
      if (!res.ok) { updateSaveState(T.network_error); return; }
      S.spec = normaliseLocal(res.data.spec);
      ensureUids();
      renderAll();
      pushHistory();
      scheduleValidate(0);
      updateSaveState(F.format(T.loaded_version, { n: number }));
    });
  }

  function exportJson() {
    var body = { format: "buildx-design", format_version: 1, name: boot.design.name, spec: JSON.parse(specJson()) };
    var blob = new Blob([JSON.stringify(body, null, 2)], { type: "application/json" });
    var link = el("a", { href: URL.createObjectURL(blob), download: (S.spec.model_name || "design") + ".json" });
    document.body.appendChild(link);
    link.click();
    window.setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  }

  function importJson(file) {
    file.text().then(function (text) {
      var data;
      try { data = JSON.parse(text); } catch (e) { updateSaveState(T.import_failed); return; }
      var spec = data && typeof data === "object" && data.spec ? data.spec : data;
      api("POST", urls.validate, spec).then(function (res) {
        if (res.status !== 200) {
          S.fieldErrors = (res.data && res.data.error && res.data.error.fields) || {};
          updateSaveState(T.import_failed);
          renderReport();
          return;
        }
        S.spec = normaliseLocal(res.data.spec);
        ensureUids();
        renderAll();
        pushHistory();
        S.report = res.data.report;
        S.fieldErrors = {};
        renderReport();
        updateSaveState(T.imported);
      });
    });
  }

  // --- Code tab and Train -------------------------------------------------------------------------

  function showTab(name) {
    ["design", "code"].forEach(function (tab) {
      var button = document.getElementById("tab-" + tab);
      var active = tab === name;
      button.setAttribute("aria-selected", active ? "true" : "false");
      button.tabIndex = active ? 0 : -1;
      document.getElementById("panel-" + tab).hidden = !active;
    });
    if (name === "code") { loadCode(); } else { renderLinks(); }
  }

  // The Code tab lists the version's code that can train: its compiled script and every script the AI
  // wrote that passed the checks (GET .../artifacts/). Train sends the chosen one to the runs API.
  function loadCode() {
    var status = document.getElementById("code-status");
    var code = document.getElementById("code");
    var train = document.getElementById("train");
    if (!S.version) {
      status.textContent = T.code_needs_save;
      code.textContent = "";
      train.disabled = !urls.runs;  // Train saves first
      return;
    }
    var number = S.version.number;
    status.textContent = T.code_loading;
    train.disabled = true;
    api("GET", urls.code.replace("{n}", number)).then(function (res) {
      if (!res.ok) {
        var fields = (res.data && res.data.error && res.data.error.fields) || {};
        var lines = [];
        Object.keys(fields).forEach(function (key) { lines = lines.concat(fields[key]); });
        status.textContent = ((res.data && res.data.error && res.data.error.message) || T.network_error) + " " + lines.join(" ");
        code.textContent = "";
        return;
      }
      S.codeVersion = number;
      S.compiled = res.data;
      S.artifacts = {};
      S.artifacts[res.data.id] = res.data;
      fillArtifactSelect(res.data.id);
      var dirty = specJson() !== S.savedJson;
      status.textContent = dirty ? F.format(T.code_unsaved, { n: number }) : "";
      train.disabled = !urls.runs;
      // Code the AI wrote for this version before (or is writing now, if the page was reloaded meanwhile).
      api("GET", urls.artifacts.replace("{n}", number)).then(function (list) {
        if (!list.ok || S.codeVersion !== number) { return; }
        var llm = (list.data || []).filter(function (a) { return a.source === "llm"; });
        llm.forEach(function (a) { if (a.status === "ready") { S.artifacts[a.id] = a; } });
        var newest = llm[0];
        if (!newest) { return; }
        if (newest.status === "pending" || newest.status === "checking") {
          fillArtifactSelect(S.compiled.id);
          waitForArtifact(newest.id, number);
        } else {
          showAiResult(newest);
          fillArtifactSelect(newest.status === "ready" ? newest.id : S.compiled.id);
        }
      });
    });
  }

  function fillArtifactSelect(selectedId) {
    var select = document.getElementById("artifact");
    select.textContent = "";
    Object.keys(S.artifacts).map(Number).sort(function (a, b) { return a - b; }).forEach(function (id) {
      var a = S.artifacts[id];
      var label = F.format(T.version, { n: a.version }) + " · " +
        (a.source === "llm" ? F.format(T.ai_option, { id: a.id }) : T.compiled);
      select.appendChild(el("option", { value: a.id, text: label, selected: a.id === selectedId }));
    });
    showArtifact(selectedId);
  }

  // Show the chosen code (always as text: it may be the AI's) and point the downloads at it.
  function showArtifact(id) {
    var artifact = S.artifacts[id];
    if (!artifact) { return; }
    S.artifact = artifact;
    root.setAttribute("data-artifact", String(artifact.id));
    root.setAttribute("data-artifact-source", artifact.source);
    var code = document.getElementById("code");
    code.textContent = artifact.code;
    code.removeAttribute("data-highlighted");
    code.className = "language-python";
    if (window.hljs) { window.hljs.highlightElement(code); }
    var blob = new Blob([artifact.code], { type: "text/x-python" });
    var script = document.getElementById("download-script");
    if (script.href && script.href.indexOf("blob:") === 0) { URL.revokeObjectURL(script.href); }
    script.href = URL.createObjectURL(blob);
    script.setAttribute("download", (S.compiled && S.compiled.filename) || (S.spec.model_name.toLowerCase() + ".py"));
    // The zip is built by the server from the compiled script only.
    var zip = document.getElementById("download-zip");
    zip.href = urls.download.replace("{n}", artifact.version);
    zip.hidden = artifact.source !== "compiled";
  }

  // --- Code written by the AI: wait for it over the WebSocket (code.ready), or poll when the socket is down

  var AI_POLL_MS = 3000;
  var AI_DONE = { ready: true, rejected: true, failed: true };

  function waitForArtifact(id, number) {
    S.waiting = { id: id, number: number };
    root.setAttribute("data-ai", "waiting");
    var button = document.getElementById("generate-ai");
    if (button) { button.disabled = true; }
    var panel = document.getElementById("ai-result");
    panel.hidden = false;
    panel.setAttribute("data-outcome", "");
    document.getElementById("ai-result-summary").textContent = T.generating;
    ["ai-result-reasons", "ai-result-checks"].forEach(function (box) { document.getElementById(box).textContent = ""; });
    document.getElementById("ai-result-code-box").hidden = true;
    connectSocket();
    window.clearInterval(S.pollTimer);
    S.pollTimer = window.setInterval(function () {
      if (!S.socket || S.socket.readyState !== 1) { checkWaiting(); }
    }, AI_POLL_MS);
  }

  function connectSocket() {
    if (S.socket && S.socket.readyState <= 1) { return; }
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket;
    try { socket = new WebSocket(scheme + window.location.host + "/ws/"); } catch (e) { return; }
    S.socket = socket;
    socket.onopen = function () {
      root.setAttribute("data-socket", "open");
      checkWaiting();  // code.ready may have been sent before this socket listened
    };
    socket.onmessage = function (event) {
      var msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      if (msg.type === "code.ready" && S.waiting && msg.artifact === S.waiting.id) { checkWaiting(); }
    };
    socket.onclose = function () {
      root.setAttribute("data-socket", "closed");
      if (S.socket === socket) { S.socket = null; }
      if (S.waiting) { window.setTimeout(connectSocket, AI_POLL_MS); }
    };
  }

  function checkWaiting() {
    var waiting = S.waiting;
    if (!waiting) { return; }
    api("GET", urls.artifacts.replace("{n}", waiting.number)).then(function (res) {
      if (!res.ok || S.waiting !== waiting) { return; }
      var artifact = (res.data || []).find(function (a) { return a.id === waiting.id; });
      if (!artifact || !AI_DONE[artifact.status]) { return; }
      S.waiting = null;
      window.clearInterval(S.pollTimer);
      var button = document.getElementById("generate-ai");
      if (button) { button.disabled = false; }
      showAiResult(artifact);
      if (S.codeVersion !== waiting.number) { return; }
      if (artifact.status === "ready") { S.artifacts[artifact.id] = artifact; }
      // Train uses the AI's script when it was accepted, the compiled one otherwise; the select can change it.
      fillArtifactSelect(artifact.status === "ready" ? artifact.id : S.compiled.id);
    });
  }

  function showAiResult(artifact) {
    var panel = document.getElementById("ai-result");
    var summary = document.getElementById("ai-result-summary");
    var reasons = document.getElementById("ai-result-reasons");
    var checks = document.getElementById("ai-result-checks");
    var codeBox = document.getElementById("ai-result-code-box");
    var answers = (artifact.attempts || []).filter(function (a) { return !a.error; }).length;
    var outcome = artifact.status === "ready" ? (answers > 1 ? "repaired" : "accepted")
      : artifact.status === "rejected" ? "fallback" : "failed";
    panel.hidden = false;
    panel.setAttribute("data-outcome", outcome);
    root.setAttribute("data-ai", outcome);
    summary.textContent = outcome === "accepted" ? T.ai_accepted
      : outcome === "repaired" ? F.format(T.ai_repaired, { n: answers - 1 })
      : outcome === "fallback" ? T.ai_fallback : T.ai_failed;
    reasons.textContent = "";
    if (outcome === "fallback" || outcome === "failed") {
      var lines = String(artifact.error || "").split("\n").filter(function (line) { return line.trim(); });
      if (lines.length) {
        summary.appendChild(document.createTextNode(" " + T.ai_reasons));
        lines.forEach(function (line) { reasons.appendChild(el("li", { text: line })); });
      }
    }
    checks.textContent = "";
    (artifact.checks || []).forEach(function (check) {
      var name = T["check_" + check.name] || check.name;
      var verdict = check.ok ? T.ai_passed : T.ai_not_passed;
      var item = el("li", { className: check.ok ? "check-ok" : "check-failed", "data-check": check.name }, [
        el("strong", { text: (check.ok ? "✓ " : "✗ ") + name }), " — " + verdict,
        check.ms ? " (" + F.format(T.ai_ms, { ms: check.ms }) + ")" : ""
      ]);
      if (check.message && check.name !== "fallback") { item.appendChild(el("pre", { className: "check-message", text: check.message })); }
      checks.appendChild(item);
    });
    document.getElementById("ai-result-details").open = outcome !== "accepted";
    // A script that was not accepted is shown for learning, as text, and never offered to Train.
    var rejectedCode = outcome === "fallback" || outcome === "failed" ? String(artifact.code || "") : "";
    codeBox.hidden = !rejectedCode;
    document.getElementById("ai-result-code").textContent = rejectedCode;
  }

  function copyCode() {
    var text = document.getElementById("code").textContent;
    var done = function () { document.getElementById("code-status").textContent = T.copied; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, fallback);
    } else { fallback(); }
    function fallback() {
      var area = el("textarea", { className: "visually-hidden" });
      area.value = text;
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
      done();
    }
  }

  // Train trains what is on screen. Unsaved edits are saved first (a new version, whose compiled script
  // trains); edits that cannot be saved stop it with "save your changes first". The runs API gets the
  // spec on screen too and refuses a version that differs from it, so nothing else is ever trained.
  function train() {
    var status = document.getElementById("train-status");
    var select = document.getElementById("artifact");
    if (!urls.runs) { return; }
    var button = document.getElementById("train");
    button.disabled = true;
    var onScreen = specJson();
    var dirty = onScreen !== S.savedJson;
    var shownVersion = S.codeVersion;
    status.textContent = dirty ? T.saving_to_train : T.starting;
    var saved = dirty ? saveSpec() : Promise.resolve({ ok: !!S.version, number: S.version && S.version.number,
                                                        valid: true, message: T.code_needs_save });
    saved.then(function (result) {
      if (!result.ok) {
        status.textContent = F.format(T.save_first, { message: result.message || "" });
        button.disabled = false;
        return null;
      }
      if (!result.valid) {
        status.textContent = T.fix_errors_first;
        loadCode();
        return null;
      }
      status.textContent = T.starting;
      // The runs API names the version by its id; the page knows the ids of versions saved before it loaded.
      var number = result.number;
      var known = S.version && S.version.number === number && S.version.id;
      var versionId = known ? Promise.resolve(S.version.id) : api("GET", urls.version_ids).then(function (res) {
        return res.ok ? res.data.versions[String(number)] : null;
      });
      return versionId.then(function (id) {
        S.version = { number: number, id: id };
        var body = { design_version: id, spec: JSON.parse(onScreen) };
        // The chosen code belongs to the version the Code tab shows: only then is it this version's.
        if (S.artifact && shownVersion === number && select.value) { body.code_artifact = Number(select.value); }
        return api("POST", urls.runs, body);
      }).then(function (res) {
        if (res.status === 201 && res.data && res.data.url) {
          window.location.assign(res.data.url);
          return;
        }
        var message = (res.data && res.data.error && res.data.error.message) || T.network_error;
        if (shownVersion !== number) { loadCode(); }  // show the code of the version just saved
        button.disabled = false;
        status.textContent = F.format(T.train_failed, { message: message });
      });
    }).catch(function () { button.disabled = false; status.textContent = T.network_error; });
  }

  function generateWithAi() {
    if (!S.version || !urls.generate || S.waiting) { return; }
    var number = S.version.number;
    var button = document.getElementById("generate-ai");
    var status = document.getElementById("code-status");
    button.disabled = true;
    status.textContent = T.generating;
    api("POST", urls.generate.replace("{n}", number), {}).then(function (res) {
      if (res.status === 202 && res.data) {
        status.textContent = "";
        waitForArtifact(res.data.id, number);
        return;
      }
      // Not set up on this server (503), or a design with errors (400): say so, do not spin.
      button.disabled = false;
      status.textContent = (res.data && res.data.error && res.data.error.message) || T.network_error;
    }).catch(function () { button.disabled = false; status.textContent = T.network_error; });
  }

  // --- Wiring ---------------------------------------------------------------------------------------

  function wire() {
    document.getElementById("undo").addEventListener("click", undo);
    document.getElementById("redo").addEventListener("click", redo);
    document.getElementById("save").addEventListener("click", save);
    document.getElementById("export").addEventListener("click", exportJson);
    document.getElementById("import-json").addEventListener("change", function (event) {
      if (event.target.files[0]) { importJson(event.target.files[0]); }
      event.target.value = "";
    });
    document.getElementById("model-name").addEventListener("input", function (event) {
      S.spec.model_name = event.target.value;
      edited(false);
    });
    document.getElementById("model-name").addEventListener("change", function () { edited(true); });
    document.getElementById("dataset").addEventListener("change", function (event) {
      var before = datasetInfo();
      S.spec.dataset = event.target.value;
      var after = datasetInfo();
      // The head follows the dataset: a last Linear that gave one score per class of the old dataset
      // gives one per class of the new one. The input needs nothing: its shape comes from the dataset.
      // A language model's head follows the vocabulary the same way.
      var size = function (info) { return info ? (isLm() ? info.vocab_size : info.num_classes) : null; };
      var last = null;
      S.spec.layers.forEach(function (l) { if (l.type === "Linear") { last = l; } });
      if (last && before && after && last.out_features === size(before) && !(isLm() && S.spec.hyperparameters.tokenizer === "bpe")) {
        last.out_features = size(after);
      }
      renderAll();
      pushHistory();
      scheduleValidate();
    });
    var samples = document.getElementById("dataset-samples");
    samples.addEventListener("load", function () { samples.hidden = false; });
    samples.addEventListener("error", function () { samples.hidden = true; });
    var transformSelect = document.getElementById("transform-type");
    S.catalog.transforms.forEach(function (t) {
      transformSelect.appendChild(el("option", { value: t.type, text: t.type + (t.random ? " *" : "") }));
    });
    document.getElementById("add-transform").addEventListener("click", function () {
      var entry = S.transforms[transformSelect.value];
      var step = { type: entry.type };
      entry.params.forEach(function (p) { if (p["default"] !== undefined) { step[p.name] = p["default"]; } });
      S.spec.preprocessing.push(step);
      renderPreprocessing();
      pushHistory();
      scheduleValidate();
    });
    document.getElementById("history").addEventListener("click", function (event) {
      var button = event.target.closest("[data-load-version]");
      if (button) { loadVersion(button.getAttribute("data-load-version")); }
    });
    var tabs = [document.getElementById("tab-design"), document.getElementById("tab-code")];
    tabs.forEach(function (tab, i) {
      tab.addEventListener("click", function () { showTab(tab.id.replace("tab-", "")); });
      tab.addEventListener("keydown", function (event) {
        if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
          var other = tabs[(i + 1) % 2];
          other.focus();
          showTab(other.id.replace("tab-", ""));
        }
      });
    });
    document.getElementById("copy-code").addEventListener("click", copyCode);
    document.getElementById("artifact").addEventListener("change", function (event) {
      showArtifact(Number(event.target.value));
    });
    document.getElementById("train").addEventListener("click", train);
    var generate = document.getElementById("generate-ai");
    if (generate && urls.generate) { generate.addEventListener("click", generateWithAi); }
    document.addEventListener("keydown", function (event) {
      var typing = event.target.matches("input[type=text], input[type=number], textarea");
      if (!(event.ctrlKey || event.metaKey) || typing) { return; }
      var key = event.key.toLowerCase();
      if (key === "z" && !event.shiftKey) { event.preventDefault(); undo(); }
      else if ((key === "z" && event.shiftKey) || key === "y") { event.preventDefault(); redo(); }
      else if (key === "s") { event.preventDefault(); save(); }
    });
    window.addEventListener("resize", function () { renderLinks(); });
    makeSortable(document.getElementById("column"));
  }

  function start(catalog) {
    // Each built-in set's state on this server, and the user's own datasets (designs.views.picker_datasets).
    var picker = boot.datasets || { builtin: {}, uploads: [] };
    catalog.datasets.forEach(function (d) {
      var state = picker.builtin[d.name];
      if (state) { d.available = state.available; d.message = state.message; }
    });
    catalog.datasets = catalog.datasets.concat(picker.uploads);
    // A language model's texts: the built-in corpora, then the user's ready text datasets.
    catalog.corpora = (catalog.corpora || []).concat(picker.corpora || []);
    S.catalog = catalog;
    catalog.layers.forEach(function (entry) { S.types[entry.type] = entry; });
    catalog.transforms.forEach(function (entry) { S.transforms[entry.type] = entry; });
    ensureUids();
    S.savedJson = boot.version ? specJson() : null;
    wire();
    renderAll();
    pushHistory();
    updateSaveState();
    root.setAttribute("data-ready", "true");
    scheduleValidate(0);
    // ?version=N (a run page links the version it trained): that version, to read or to save again.
    var wanted = new URLSearchParams(window.location.search).get("version");
    if (wanted && /^\d+$/.test(wanted) && boot.version && Number(wanted) !== boot.version.number) {
      loadVersion(wanted);
    }
  }

  api("GET", urls.catalog).then(function (res) {
    if (res.ok) { start(res.data); }
    else { document.getElementById("palette").textContent = T.network_error; }
  }).catch(function () { document.getElementById("palette").textContent = T.network_error; });
})();
