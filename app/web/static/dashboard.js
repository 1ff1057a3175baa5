// Dashboard: draws the throughput chart with uPlot from /dashboard/throughput.json.
// Without this file (or without JavaScript) the same figures are in the table under
// the chart; the live events list is htmx's (hx-get on #events-feed), not this file's.
(function () {
  "use strict";

  var HEIGHT = 260;
  var COLORS = ["#0b57a4", "#c25e00", "#2e7d32", "#6a3fa0", "#00838f", "#a3131d"];

  function say(text) {
    var status = document.getElementById("throughput-status");
    if (status) {
      status.textContent = text;
    }
  }

  function options(box, data) {
    var ink = getComputedStyle(document.body).color;
    var axis = { stroke: ink, grid: { stroke: "rgba(128, 128, 128, 0.25)" } };
    var series = [{}];
    data.series.forEach(function (s, i) {
      series.push({
        label: s.label,
        stroke: COLORS[i % COLORS.length],
        width: 2,
        dash: s.outcome === "failed" ? [6, 4] : undefined,
        value: function (u, v) { return v == null ? "–" : v + " /h"; }
      });
    });
    return {
      width: Math.max(box.clientWidth, 200),
      height: HEIGHT,
      series: series,
      scales: { x: { time: true } },
      axes: [axis, Object.assign({ label: "finished per hour" }, axis)],
      legend: { live: true }
    };
  }

  function draw(box, data) {
    if (!data.times || data.times.length === 0) {
      say("Not enough history yet to draw a chart.");
      return;
    }
    var columns = [data.times].concat(data.series.map(function (s) { return s.values; }));
    var plot = new uPlot(options(box, data), columns, box);
    box.setAttribute("data-drawn", "true");
    window.addEventListener("resize", function () {
      plot.setSize({ width: Math.max(box.clientWidth, 200), height: HEIGHT });
    });
  }

  function load() {
    var box = document.getElementById("throughput-chart");
    if (!box) {
      return;
    }
    if (typeof uPlot === "undefined") {
      say("The chart could not be drawn (its script did not load); the table below has the figures.");
      return;
    }
    fetch(box.getAttribute("data-src"), {
      credentials: "same-origin",
      headers: { Accept: "application/json" }
    }).then(function (response) {
      if (response.status === 401) {
        throw new Error("Your login session has ended: log in again to see the chart.");
      }
      if (!response.ok) {
        throw new Error("The chart's figures did not load (the server answered " +
          response.status + "); the table below has them.");
      }
      return response.json();
    }).then(function (data) {
      draw(box, data);
    }).catch(function (error) {
      say(error instanceof TypeError
        ? "The chart's figures did not load: the server cannot be reached."
        : error.message);
    });
  }

  document.addEventListener("DOMContentLoaded", load);
})();
