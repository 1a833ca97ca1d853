// Forms generated from the catalog's parameter descriptions (designs/catalog.py, GET /api/v1/catalog/).
// Shared by the blocks, the preprocessing steps and the hyperparameters panel of the editor.
(function () {
  "use strict";

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) { return; }
      if (key === "text") { node.textContent = value; }
      else if (key === "className") { node.className = value; }
      else if (value === true) { node.setAttribute(key, ""); }
      else { node.setAttribute(key, String(value)); }
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) { return; }
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  // A value as the text field shows it: [3, 5] -> "3, 5".
  function toText(value) {
    if (value === null || value === undefined) { return ""; }
    if (Array.isArray(value)) { return value.join(", "); }
    return String(value);
  }

  // Parse what the user typed for a parameter kind. Returns {ok, value, empty}. Anything unreadable
  // is passed on as the raw text, so that the server's validation names the problem on the field.
  function parse(kind, text) {
    var raw = String(text).trim();
    if (raw === "") { return { ok: true, empty: true }; }
    var numbers;
    switch (kind) {
      case "int":
        return /^-?\d+$/.test(raw) ? { ok: true, value: parseInt(raw, 10) } : { ok: false, value: raw };
      case "float":
        return isFinite(Number(raw)) ? { ok: true, value: Number(raw) } : { ok: false, value: raw };
      case "padding":
        if (raw === "same" || raw === "valid") { return { ok: true, value: raw }; }
        /* falls through */
      case "int_pair":
      case "size":
      case "shape":
        numbers = raw.replace(/[\[\]()]/g, "").split(/[\s,x×]+/).filter(Boolean);
        if (!numbers.every(function (n) { return /^-?\d+$/.test(n); })) { return { ok: false, value: raw }; }
        numbers = numbers.map(function (n) { return parseInt(n, 10); });
        if (kind !== "shape" && numbers.length === 1) { return { ok: true, value: numbers[0] }; }
        return { ok: true, value: numbers };
      case "float_list":
        numbers = raw.replace(/[\[\]()]/g, "").split(/[\s,]+/).filter(Boolean);
        if (!numbers.every(function (n) { return isFinite(Number(n)); })) { return { ok: false, value: raw }; }
        return { ok: true, value: numbers.map(Number) };
      default:
        return { ok: true, value: raw };
    }
  }

  var fieldCounter = 0;

  // One labelled field for one parameter. `target` is the object holding the value (a layer, a
  // transform, the hyperparameters); onChange(committed) is called after each edit (committed = the
  // user finished the edit: change event rather than input event).
  function field(param, target, opts) {
    var lang = opts.lang;
    var id = "f" + (++fieldCounter);
    var help = (param.help && (param.help[lang] || param.help.en)) || "";
    var wrap = el("div", { className: "field field-" + param.kind + (param.inferred ? " field-inferred" : ""),
                           "data-param": param.name });
    var label = el("label", { "for": id, text: param.name + (param.required ? " *" : "") });
    var has = Object.prototype.hasOwnProperty.call(target, param.name);
    var current = has ? target[param.name] : param["default"];
    var input;

    function set(value, committed) {
      target[param.name] = value;
      opts.onChange(committed);
    }
    function unset(committed) {
      delete target[param.name];
      opts.onChange(committed);
    }

    if (param.kind === "bool") {
      input = el("input", { type: "checkbox", id: id, checked: !!current });
      input.addEventListener("change", function () { set(input.checked, true); });
      wrap.appendChild(input);
      wrap.appendChild(label);
    } else if (param.kind === "choice") {
      input = el("select", { id: id });
      (param.choices || []).forEach(function (choice) {
        input.appendChild(el("option", { value: choice, text: String(choice), selected: String(choice) === String(current) }));
      });
      input.addEventListener("change", function () { set(input.value, true); });
      wrap.appendChild(label);
      wrap.appendChild(input);
    } else {
      var numeric = param.kind === "int" || param.kind === "float";
      input = el("input", {
        type: numeric ? "number" : "text", id: id, value: param.inferred && !has ? "" : toText(current),
        min: numeric && param.min !== undefined ? param.min : null,
        max: numeric && param.max !== undefined ? param.max : null,
        step: param.kind === "float" ? "any" : (numeric ? 1 : null),
        inputmode: numeric ? "decimal" : null, autocomplete: "off", spellcheck: "false",
        placeholder: param.nullable && current === null ? opts.strings.none : null
      });
      var onEdit = function (committed) {
        var parsed = parse(param.kind, input.value);
        if (parsed.empty) {
          if (param.inferred || param.nullable || !param.required) {
            if (param.nullable && param["default"] === null) { set(null, committed); } else { unset(committed); }
          } else { unset(committed); }
          return;
        }
        set(parsed.value, committed);
      };
      input.addEventListener("input", function () { onEdit(false); });
      input.addEventListener("change", function () { onEdit(true); });
      wrap.appendChild(label);
      wrap.appendChild(input);
    }
    if (param.inferred) { input.setAttribute("data-inferred", param.name); }
    var note = el("span", { className: "field-note" });
    wrap.appendChild(note);
    if (help) {
      var helpId = id + "-help";
      input.setAttribute("aria-describedby", helpId);
      wrap.appendChild(el("span", { id: helpId, className: "field-help", text: help }));
    }
    var errorNode = el("span", { className: "field-error", role: "alert" });
    wrap.appendChild(errorNode);
    return wrap;
  }

  function humanShape(shape) {
    if (!shape) { return "—"; }
    return shape.join("×");
  }

  function humanNumber(n) {
    if (n === null || n === undefined) { return "—"; }
    return Number(n).toLocaleString();
  }

  function humanBytes(n) {
    if (n === null || n === undefined) { return "—"; }
    var units = ["B", "KB", "MB", "GB", "TB"];
    var i = 0;
    var v = Number(n);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v : v.toFixed(1)) + " " + units[i];
  }

  function format(template, values) {
    return String(template).replace(/%\((\w+)\)s/g, function (_, key) {
      return values && values[key] !== undefined ? values[key] : "";
    });
  }

  window.BuildXForms = {
    el: el, field: field, parse: parse, toText: toText, format: format,
    humanShape: humanShape, humanNumber: humanNumber, humanBytes: humanBytes
  };
})();
