// Small SVG line charts for the run and compare pages: no library, text only through textContent.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var W = 480, H = 240, PAD = { l: 48, r: 12, t: 12, b: 28 };

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function fmt(v) {
    if (Math.abs(v) >= 100) { return v.toFixed(0); }
    if (Math.abs(v) >= 1) { return v.toFixed(2); }
    return v.toFixed(3);
  }

  // series: [{label, points: [[x, y], ...]}]; each series gets the class "series-<index>".
  function Chart(container) {
    this.container = container;
    this.svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img", class: "chart-svg" });
    container.appendChild(this.svg);
    this.legend = document.createElement("ul");
    this.legend.className = "chart-legend";
    container.appendChild(this.legend);
  }

  Chart.prototype.draw = function (series) {
    var svg = this.svg;
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var xs = [], ys = [];
    series.forEach(function (s) {
      s.points.forEach(function (p) {
        if (p[1] !== null && p[1] !== undefined && isFinite(p[1])) { xs.push(p[0]); ys.push(p[1]); }
      });
    });
    var x0 = Math.min.apply(null, xs.concat([1])), x1 = Math.max.apply(null, xs.concat([2]));
    var y0 = ys.length ? Math.min.apply(null, ys) : 0, y1 = ys.length ? Math.max.apply(null, ys) : 1;
    if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
    var sx = function (x) { return PAD.l + (x - x0) / (x1 - x0 || 1) * (W - PAD.l - PAD.r); };
    var sy = function (y) { return H - PAD.b - (y - y0) / (y1 - y0) * (H - PAD.t - PAD.b); };
    el("line", { x1: PAD.l, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b, class: "axis" }, svg);
    el("line", { x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: H - PAD.b, class: "axis" }, svg);
    [y0, (y0 + y1) / 2, y1].forEach(function (v) {
      var t = el("text", { x: PAD.l - 6, y: sy(v) + 4, class: "tick", "text-anchor": "end" }, svg);
      t.textContent = fmt(v);
      el("line", { x1: PAD.l, y1: sy(v), x2: W - PAD.r, y2: sy(v), class: "grid" }, svg);
    });
    [x0, x1].forEach(function (v) {
      var t = el("text", { x: sx(v), y: H - 8, class: "tick", "text-anchor": "middle" }, svg);
      t.textContent = String(v);
    });
    var legend = this.legend;
    while (legend.firstChild) { legend.removeChild(legend.firstChild); }
    series.forEach(function (s, i) {
      var pts = s.points.filter(function (p) { return p[1] !== null && p[1] !== undefined && isFinite(p[1]); });
      var cls = "series series-" + i;
      if (pts.length > 1) {
        el("polyline", { points: pts.map(function (p) { return sx(p[0]) + "," + sy(p[1]); }).join(" "), class: cls }, svg);
      }
      pts.forEach(function (p) { el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, class: cls + " dot" }, svg); });
      var item = document.createElement("li");
      var swatch = document.createElement("span");
      swatch.className = "swatch series-" + i;
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(s.label));
      legend.appendChild(item);
    });
    svg.setAttribute("data-points", String(xs.length));
  };

  window.BuildXChart = Chart;
})();
