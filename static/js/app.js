// Draw every plotly figure the server embedded as JSON: <div data-figure="id"> + <script id="id" type="application/json">.
function drawFigures(root) {
  (root || document).querySelectorAll("[data-figure]").forEach(function (el) {
    if (el.dataset.drawn) return;
    var source = document.getElementById(el.dataset.figure);
    if (!source || !window.Plotly) return;
    var figure = JSON.parse(source.textContent);
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
