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
