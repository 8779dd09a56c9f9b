// Charts: the server sends numbers (<div data-figure="id"> + <script id="id" type="application/json">), this draws them.
var CHART_LAYOUT = {
  paper_bgcolor: "#fff", plot_bgcolor: "#fff", font: { family: "system-ui, sans-serif", size: 11, color: "#1d2430" },
  xaxis: { gridcolor: "#ebf0f8", zerolinecolor: "#ebf0f8", automargin: true },
  yaxis: { gridcolor: "#ebf0f8", zerolinecolor: "#ebf0f8", automargin: true },
};

function layout(extra) {
  var result = JSON.parse(JSON.stringify(CHART_LAYOUT));
  Object.keys(extra).forEach(function (key) {
    result[key] = typeof extra[key] === "object" && result[key] ? Object.assign(result[key], extra[key]) : extra[key];
  });
  return result;
}

// "12 missing (10%)": the share of rows the distribution does not show.
function missingText(spec) {
  if (!spec.missing) return "";
  var share = spec.rows ? (100 * spec.missing) / spec.rows : 0;
  var shown = share >= 10 ? Math.round(share) : share >= 1 ? share.toFixed(1) : share > 0 ? "<1" : "0";
  return spec.missing.toLocaleString("en-US") + " missing (" + shown + "%)";
}

function chartTitle(spec) {
  var missing = missingText(spec);
  return { text: spec.title + (missing ? " · " + missing : ""), font: { size: 13 } };
}

// Whole-number ticks for integer columns (years, counts): a step of 1, 2, 5, 10, 20, 50... and no thousands commas.
function integerAxis(low, high) {
  var rough = Math.max((high - low) / 6, 1), magnitude = Math.pow(10, Math.floor(Math.log10(rough))), step = magnitude;
  [1, 2, 5, 10].some(function (m) { step = m * magnitude; return step >= rough; });
  return { tickmode: "linear", tick0: Math.ceil(low), dtick: Math.max(Math.round(step), 1), tickformat: "d" };
}

var CHARTS = {
  histogram: function (spec) {
    var e = spec.edges, centres = [], widths = [], ranges = [];
    for (var i = 0; i + 1 < e.length; i++) { centres.push((e[i] + e[i + 1]) / 2); widths.push(e[i + 1] - e[i]); ranges.push([e[i], e[i + 1]]); }
    var xaxis = spec.integer ? integerAxis(e[0], e[e.length - 1]) : { tickformat: "~g" };
    return {
      data: [{ type: "bar", x: centres, y: spec.counts, width: widths, customdata: ranges, marker: { color: "#2454c5" },
               hovertemplate: "%{customdata[0]:.4g} – %{customdata[1]:.4g}: %{y}<extra></extra>" }],
      layout: layout({ title: chartTitle(spec), height: 220, margin: { l: 40, r: 10, t: 30, b: 30 }, bargap: 0.02, xaxis: xaxis }),
    };
  },
  top: function (spec) {
    var values = spec.values.slice(), counts = spec.counts.slice(), colours = values.map(function () { return "#5a7bd8"; });
    if (spec.missing) { values.push("(missing)"); counts.push(spec.missing); colours.push("#b9c1cf"); }
    return {
      data: [{ type: "bar", orientation: "h", x: counts.reverse(), y: values.reverse(), marker: { color: colours.reverse() } }],
      layout: layout({ title: chartTitle(spec), height: 220, margin: { l: 90, r: 10, t: 30, b: 30 }, yaxis: { type: "category" } }),
    };
  },
  series: function (spec) {
    var whole = spec.x.every(function (x) { return Number.isInteger(x); });
    return {
      data: [{ type: "scatter", mode: "lines+markers", x: spec.x, y: spec.y, line: { color: "#2454c5" } }],
      layout: layout({ title: { text: spec.title, font: { size: 13 } }, height: 240, margin: { l: 45, r: 10, t: 30, b: 35 },
                       xaxis: Object.assign({ title: { text: spec.axis } }, whole ? integerAxis(Math.min.apply(null, spec.x), Math.max.apply(null, spec.x)) : {}) }),
    };
  },
  compare: function (spec) {
    return {
      data: spec.series.map(function (s) { return { type: "bar", name: s.name, x: spec.metrics, y: s.values }; }),
      layout: layout({ barmode: "group", height: 320, margin: { l: 45, r: 10, t: 20, b: 40 } }),
    };
  },
  // Candidate − baseline per metric: green when the change is for the better (by the metric's direction), red when worse.
  change: function (spec) {
    var words = spec.better.map(function (b) { return b === null ? "no change" : b ? "better" : "worse"; });
    return {
      data: [{ type: "bar", x: spec.metrics, y: spec.changes, text: words, textposition: "outside", cliponaxis: false,
               marker: { color: spec.better.map(function (b) { return b === null ? "#b9c1cf" : b ? "#1f8a4c" : "#c0392b"; }) },
               hovertemplate: "%{x}: %{y:+.4g} (%{text})<extra></extra>" }],
      layout: layout({ title: { text: "Change against the baseline", font: { size: 13 } }, height: 220,
                       margin: { l: 50, r: 10, t: 30, b: 40 }, yaxis: { tickformat: "+.3~g", zeroline: true, zerolinecolor: "#8a94a6" } }),
    };
  },
  // Monitoring: one line per trace over a window, a vertical line at every deployment (dashed) and rollback (red).
  timeseries: function (spec) {
    var colours = {}, palette = ["#2454c5", "#d9822b", "#1f8a4c", "#8e44ad", "#c0392b", "#16a2b8", "#7f8c8d"];
    var data = spec.traces.map(function (t) {
      if (!(t.group in colours)) colours[t.group] = palette[Object.keys(colours).length % palette.length];
      var dash = t.dash || { p50: "dot", p95: "dash" }[t.percentile] || "solid";
      // Markers too: a minute with traffic between two without is a point with no line to draw.
      return { type: "scatter", mode: "lines+markers", marker: { size: 4 }, name: t.name, legendgroup: t.group, x: spec.x, y: t.y, connectgaps: false,
               line: { color: colours[t.group], dash: dash, width: t.group === "all" ? 2.5 : 1.5 },
               visible: t.hidden ? "legendonly" : true };
    });
    var rollback = function (m) { return m.kind === "rollback"; };
    var shapes = spec.markers.map(function (m) {
      return { type: "line", xref: "x", yref: "paper", x0: m.at, x1: m.at, y0: 0, y1: 1,
               line: { color: rollback(m) ? "#c0392b" : "#5d6778", width: 1.5, dash: rollback(m) ? "dot" : "dash" } };
    });
    var annotations = spec.markers.map(function (m) {
      return { x: m.at, xref: "x", y: 1, yref: "paper", yanchor: "bottom", text: m.kind === "rollback" ? "↩" : "▲",
               hovertext: m.label, showarrow: false, font: { color: rollback(m) ? "#c0392b" : "#5d6778", size: 11 } };
    });
    var yaxis = { title: { text: spec.unit }, rangemode: "tozero" };
    if (spec.unit === "share") yaxis.tickformat = ".1%";
    return {
      data: data,
      layout: layout({ title: { text: spec.title, font: { size: 13 } }, height: 300, margin: { l: 55, r: 10, t: 40, b: 40 },
                       xaxis: { type: "date" }, yaxis: yaxis, shapes: shapes, annotations: annotations,
                       legend: { orientation: "h", y: -0.2 }, hovermode: "x unified" }),
    };
  },
  // Drift: features down, reports across. Colour: the score against its threshold (1 = at it; past it, red);
  // the raw score, threshold and method in the hover; a crossed threshold marked ✕ in its cell.
  heatmap: function (spec) {
    var text = spec.drifted.map(function (row) { return row.map(function (d) { return d ? "✕" : ""; }); });
    var custom = spec.y.map(function (_, i) {
      return spec.x.map(function (_, j) { return [spec.scores[i][j], spec.thresholds[i], spec.methods[i]]; });
    });
    var edge = 1 / spec.zmax;
    return {
      data: [{ type: "heatmap", x: spec.x_edges || spec.x, y: spec.y, z: spec.z, zmin: 0, zmax: spec.zmax, text: text, texttemplate: "%{text}",
               customdata: custom, hoverongaps: false,
               colorscale: [[0, "#eef6ee"], [edge * 0.999, "#f6e7a6"], [edge, "#f4a582"], [1, "#b2182b"]],
               colorbar: { thickness: 12, title: { text: "÷ threshold", side: "right" }, tickvals: [0, 1, spec.zmax], ticktext: ["0", "1", "≥" + spec.zmax] },
               hovertemplate: "%{y} at %{x}<br>%{customdata[2]} score %{customdata[0]:.4g}, threshold %{customdata[1]:.4g} %{text}<extra></extra>" }],
      layout: layout({ title: { text: spec.title, font: { size: 13 } }, height: Math.max(240, 28 * spec.y.length + 110),
                       margin: { l: 110, r: 10, t: 40, b: 50 }, xaxis: { type: "date" }, yaxis: { type: "category", automargin: true } }),
    };
  },
  drift_histogram: function (spec) {
    var x = spec.values, widths;
    if (spec.edges) {
      var e = spec.edges; x = []; widths = [];
      for (var i = 0; i + 1 < e.length; i++) { x.push((e[i] + e[i + 1]) / 2); widths.push(e[i + 1] - e[i]); }
    }
    var trace = function (name, y, colour) {
      var t = { type: "bar", name: name, x: x, y: y, marker: { color: colour }, opacity: spec.edges ? 0.6 : 1,
                hovertemplate: name + " %{x}: %{y:.1%}<extra></extra>" };
      if (widths) t.width = widths;
      return t;
    };
    return {
      data: [trace("baseline", spec.baseline, "#8a94a6"), trace("current", spec.current, spec.drifted ? "#c0392b" : "#2454c5")],
      layout: layout({ title: { text: spec.title, font: { size: 13 } }, height: 240, margin: { l: 45, r: 10, t: 30, b: 30 },
                       barmode: spec.edges ? "overlay" : "group", bargap: 0.05, yaxis: { tickformat: ".0%" },
                       xaxis: spec.edges ? { tickformat: "~g" } : { type: "category" }, legend: { orientation: "h", y: -0.25 } }),
    };
  },
  // Costs: spend per period stacked by group, each group's bar in two parts: the bill's (solid) and the estimated
  // (hatched, same colour). Both parts' hover says the group's whole figure, as the table shows it. Then the
  // forecast of the rest of the month as its mean line inside a shaded band.
  cost_bars: function (spec) {
    var palette = ["#2454c5", "#d9822b", "#1f8a4c", "#8e44ad", "#c0392b", "#16a2b8", "#7f8c8d", "#b7950b", "#5d6d7e", "#e67e22", "#2e86c1", "#a93226", "#95a5a6"];
    var data = [];
    spec.traces.forEach(function (t, i) {
      var colour = palette[i % palette.length], custom = t.y.map(function (y, j) { return [y, t.estimated[j]]; });
      // A tag value is anyone's text: plotly reads a few HTML tags in names and hovers, so none get through.
      var label = t.name.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
      var hover = "%{x} · " + label.replace(/%/g, "%%") + ": %{customdata[0]:,.2f} USD (estimated %{customdata[1]:,.2f})<extra></extra>";
      var billed = t.y.map(function (y, j) { return Math.round((y - t.estimated[j]) * 10000) / 10000; });
      data.push({ type: "bar", name: label, legendgroup: t.name, x: spec.x, y: billed, customdata: custom, marker: { color: colour }, hovertemplate: hover });
      if (t.estimated.some(function (e) { return e > 0; })) {
        data.push({ type: "bar", name: label + " (estimated)", legendgroup: t.name, showlegend: false, x: spec.x, y: t.estimated, customdata: custom,
                    marker: { color: colour, line: { color: colour, width: 1 }, pattern: { shape: "/", solidity: 0.3 } }, hovertemplate: hover });
      }
    });
    var f = spec.forecast;
    if (f) {
      data.push({ type: "scatter", mode: "lines", x: f.x, y: f.high, line: { width: 0 }, hoverinfo: "skip", showlegend: false, legendgroup: "forecast" });
      data.push({ type: "scatter", mode: "lines", x: f.x, y: f.low, fill: "tonexty", fillcolor: "rgba(36,84,197,0.18)", line: { width: 0 },
                  name: f.label, legendgroup: "forecast", hovertemplate: "%{x}: band low %{y:,.2f} USD<extra></extra>" });
      data.push({ type: "scatter", mode: f.x.length > 1 ? "lines" : "markers", x: f.x, y: f.mean, name: "forecast (mean)", legendgroup: "forecast",
                  line: { color: "#1d2430", dash: "dash", width: 2 }, marker: { color: "#1d2430", size: 9, symbol: "diamond" },
                  error_y: f.x.length > 1 ? undefined : { type: "data", symmetric: false, array: [f.high[0] - f.mean[0]], arrayminus: [f.mean[0] - f.low[0]], color: "#2454c5" },
                  hovertemplate: "%{x}: forecast %{y:,.2f} USD<extra></extra>" });
    }
    // Days: the axis spans every day of the period (with or without spend) and the forecast after it.
    var xaxis = { type: "category" };
    if (spec.granularity === "day") {
      var days = spec.x.concat(f ? f.x : []).map(function (d) { return Date.parse(d); }), half = 12 * 3600 * 1000;
      xaxis = { type: "date", tickformat: "%b %d" };
      if (days.length) xaxis.range = [Math.min.apply(null, days) - half, Math.max.apply(null, days) + half];
    }
    return {
      data: data,
      layout: layout({ title: { text: spec.title, font: { size: 13 } }, height: 360, margin: { l: 60, r: 10, t: 40, b: 40 }, barmode: "stack",
                       xaxis: xaxis,
                       yaxis: { title: { text: "USD" }, rangemode: "tozero" }, showlegend: true, legend: { orientation: "h", y: -0.18 }, hovermode: "closest" }),
    };
  },
};

function drawFigures(root) {
  (root || document).querySelectorAll("[data-figure]").forEach(function (el) {
    if (el.dataset.drawn) return;
    var source = document.getElementById(el.dataset.figure);
    if (!source || !window.Plotly) return;
    var spec = JSON.parse(source.textContent), build = CHARTS[spec.kind];
    if (!build) return;
    var figure = build(spec);
    window.Plotly.newPlot(el, figure.data, figure.layout, { displaylogo: false, responsive: true });
    el.dataset.drawn = "1";
  });
}
document.addEventListener("DOMContentLoaded", function () { drawFigures(document); });
document.addEventListener("htmx:afterSettle", function (evt) { drawFigures(evt.target); });
// A flash saying something was queued or started ("Run 5 queued") goes once nothing on the page follows the work
// any more (no element polls): the page shows how it ended, e.g. "succeeded", and the flash would contradict it.
function dropFinishedProgress() {
  if (document.querySelector('[hx-trigger^="every"]')) return;
  document.querySelectorAll(".messages li.progress").forEach(function (li) { li.remove(); });
  document.querySelectorAll(".messages").forEach(function (list) { if (!list.children.length) list.remove(); });
}
document.addEventListener("DOMContentLoaded", dropFinishedProgress);
document.addEventListener("htmx:afterSettle", dropFinishedProgress);

// Upload progress for forms that post files through htmx.
document.addEventListener("htmx:xhr:progress", function (evt) {
  var form = evt.target.closest("form");
  var bar = form && form.querySelector("progress");
  if (bar && evt.detail.lengthComputable) {
    bar.hidden = false;
    bar.value = Math.round((evt.detail.loaded / evt.detail.total) * 100);
    var label = form.querySelector("[data-progress-label]");
    if (label) label.textContent = bar.value + "% uploaded";
  }
});

// Copy buttons next to long URIs and hashes: the value is copied whole, however it wraps on screen.
document.addEventListener("click", function (evt) {
  var button = evt.target.closest && evt.target.closest("button.copy[data-copy]");
  if (!button) return;
  var done = function () {
    button.classList.add("copied");
    button.textContent = "Copied";
    setTimeout(function () { button.classList.remove("copied"); button.textContent = "Copy"; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(button.dataset.copy).then(done);
  } else {
    // Plain http on a non-local host has no clipboard API: select the text so Ctrl+C copies it.
    var code = button.parentElement.querySelector("code");
    var range = document.createRange();
    range.selectNodeContents(code);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    if (document.execCommand && document.execCommand("copy")) done();
  }
});

// A select that applies itself (the lineage depth): submits its form when changed. Here, not in an onchange=
// attribute, because the Content-Security-Policy runs no inline script.
document.addEventListener("change", function (evt) {
  var select = evt.target.closest && evt.target.closest("select[data-submit-on-change]");
  if (select && select.form) select.form.submit();
});

// A lineage graph may shrink to 60 % of its width to fit its box, no further (then the box scrolls). Set from here,
// not a style attribute, which the Content Security Policy refuses.
function lineageMinWidths(root) {
  root.querySelectorAll("svg[data-min-width]").forEach(function (svg) {
    svg.style.minWidth = svg.getAttribute("data-min-width") + "px";
  });
}
document.addEventListener("DOMContentLoaded", function () { lineageMinWidths(document); });
document.addEventListener("htmx:afterSettle", function (evt) { lineageMinWidths(evt.target); });
