// The compare page: every run's validation curves on one chart.
(function () {
  "use strict";
  var data = document.getElementById("compare-series");
  if (!data || !window.BuildXChart) { return; }
  var runs = JSON.parse(data.textContent);
  document.querySelectorAll(".chart[data-metric]").forEach(function (box) {
    var metric = box.dataset.metric;
    new window.BuildXChart(box).draw(runs.map(function (run) {
      return { label: run.label, run: run.id, points: run.epochs.map(function (m) { return [m.epoch, m[metric]]; }) };
    }));
  });
})();
