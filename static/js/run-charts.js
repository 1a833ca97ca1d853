// Small SVG line charts for the run and compare pages: no library, text only through textContent.
//
// Every series has its own colour, dash pattern and marker shape, and is drawn a little thinner than
// the one before it: a run whose line lies exactly under another's still shows (its dashes and
// markers peek out), and the legend shows each style.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var W = 480, H = 240, PAD = { r: 12, t: 12, b: 28 };
  var CHAR_W = 6.6;  // width of a tick label's character at 11px, in viewBox units
  // Eight styles (the compare page overlays up to twelve runs; styles repeat after eight, colours
  // with them, so the ninth run differs from the first by its line's width only).
  var COLOURS = 8;
  var DASHES = ["", "7 4", "2 3", "10 3 2 3", "4 2", "12 4", "1 4", "6 2 1 2"];
  var MARKERS = ["circle", "square", "triangle", "diamond", "cross", "square", "circle", "triangle"];
  // The legend's sample of each style (HTML, not a second SVG): a line of that kind and the marker.
  var BORDERS = ["solid", "dashed", "dotted", "dashed", "dashed", "dashed", "dotted", "dashed"];
  var GLYPHS = ["\u25CF", "\u25A0", "\u25B2", "\u25C6", "\u2715", "\u25A1", "\u25CB", "\u25B3"];

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }

  // A tick label that stays short whatever the value: 8009662123415 is "8.01e12", not cut to "123415".
  function fmt(v, format) {
    if (format === "percent") { return (v * 100).toFixed(1) + "%"; }
    var a = Math.abs(v);
    if (a >= 1e5) { return v.toExponential(2).replace("e+", "e"); }
    if (a >= 100) { return v.toFixed(0); }
    if (a >= 1) { return v.toFixed(2); }
    if (a > 0 && a < 0.001) { return v.toExponential(1); }
    return v.toFixed(3);
  }

  function marker(kind, x, y, cls, parent) {
    var r = 3;
    if (kind === "square") { return el("rect", { x: x - r, y: y - r, width: 2 * r, height: 2 * r, class: cls }, parent); }
    if (kind === "triangle") {
      return el("polygon", { points: [x, y - r - 1, x - r - 1, y + r, x + r + 1, y + r].join(" "), class: cls }, parent);
    }
    if (kind === "diamond") {
      return el("polygon", { points: [x, y - r - 1, x + r + 1, y, x, y + r + 1, x - r - 1, y].join(" "), class: cls }, parent);
    }
    if (kind === "cross") {
      return el("path", { d: "M" + (x - r) + " " + (y - r) + "L" + (x + r) + " " + (y + r) + "M" + (x - r) + " " + (y + r) +
                         "L" + (x + r) + " " + (y - r), class: cls + " cross" }, parent);
    }
    return el("circle", { cx: x, cy: y, r: r - 0.5, class: cls }, parent);
  }

  // series: [{label, points: [[x, y], ...]}]; each series gets the class "series-<index>".
  function Chart(container) {
    this.container = container;
    this.format = container.dataset.format || "";
    this.svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img", class: "chart-svg" });
    container.appendChild(this.svg);
    this.legend = document.createElement("ul");
    this.legend.className = "chart-legend";
    container.appendChild(this.legend);
  }

  Chart.prototype.draw = function (series) {
    var svg = this.svg, format = this.format;
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var xs = [], ys = [];
    series.forEach(function (s) {
      s.points.forEach(function (p) {
        if (p[1] !== null && p[1] !== undefined && isFinite(p[1])) { xs.push(p[0]); ys.push(p[1]); }
      });
    });
    var x0 = Math.min.apply(null, xs.concat([1])), x1 = Math.max.apply(null, xs.concat([2]));
    var y0 = ys.length ? Math.min.apply(null, ys) : 0, y1 = ys.length ? Math.max.apply(null, ys) : 1;
    if (y1 - y0 < 1e-9 * Math.max(1, Math.abs(y1))) { y0 -= 0.5; y1 += 0.5; }
    var ticks = [y0, (y0 + y1) / 2, y1];
    var labels = ticks.map(function (v) { return fmt(v, format); });
    // The left margin fits the longest label, so no label is cut at the edge.
    var left = Math.max(36, 10 + CHAR_W * Math.max.apply(null, labels.map(function (t) { return t.length; })));
    var sx = function (x) { return left + (x - x0) / (x1 - x0 || 1) * (W - left - PAD.r); };
    var sy = function (y) { return H - PAD.b - (y - y0) / (y1 - y0) * (H - PAD.t - PAD.b); };
    el("line", { x1: left, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b, class: "axis" }, svg);
    el("line", { x1: left, y1: PAD.t, x2: left, y2: H - PAD.b, class: "axis" }, svg);
    ticks.forEach(function (v, i) {
      var t = el("text", { x: left - 6, y: sy(v) + 4, class: "tick tick-y", "text-anchor": "end" }, svg);
      t.textContent = labels[i];
      el("line", { x1: left, y1: sy(v), x2: W - PAD.r, y2: sy(v), class: "grid" }, svg);
    });
    [x0, x1].forEach(function (v) {
      var t = el("text", { x: sx(v), y: H - 8, class: "tick", "text-anchor": "middle" }, svg);
      t.textContent = String(v);
    });
    var legend = this.legend;
    while (legend.firstChild) { legend.removeChild(legend.firstChild); }
    var n = series.length;
    series.forEach(function (s, i) {
      var pts = s.points.filter(function (p) { return p[1] !== null && p[1] !== undefined && isFinite(p[1]); });
      var cls = "series series-" + (i % COLOURS);
      var dash = DASHES[i % DASHES.length];
      var width = String(Math.max(1.2, 2.6 - 0.3 * i));  // later series thinner: one on top of another shows both
      if (pts.length > 1) {
        var line = el("polyline", { points: pts.map(function (p) { return sx(p[0]) + "," + sy(p[1]); }).join(" "),
                                    class: cls, "stroke-width": width }, svg);
        if (dash) { line.setAttribute("stroke-dasharray", dash); }
      }
      pts.forEach(function (p) { marker(MARKERS[i % MARKERS.length], sx(p[0]), sy(p[1]), cls + " dot", svg); });
      var item = document.createElement("li");
      var swatch = document.createElement("span");
      swatch.className = "swatch-line series-" + (i % COLOURS);
      swatch.setAttribute("aria-hidden", "true");
      swatch.style.borderTopStyle = BORDERS[i % BORDERS.length];
      swatch.setAttribute("data-dash", dash || "solid");
      var glyph = document.createElement("span");
      glyph.className = "swatch-marker";
      glyph.textContent = GLYPHS[i % GLYPHS.length];
      swatch.appendChild(glyph);
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(" " + s.label));
      item.setAttribute("data-series", String(i));
      if (s.run) { item.setAttribute("data-run", String(s.run)); }
      legend.appendChild(item);
    });
    svg.setAttribute("data-points", String(xs.length));
    svg.setAttribute("data-series", String(n));
  };

  window.BuildXChart = Chart;
  window.BuildXChart.format = fmt;
})();
