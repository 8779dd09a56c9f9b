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
