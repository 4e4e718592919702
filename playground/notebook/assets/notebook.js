// The notebook views' drawing (playground/notebook): inlined into every view that draws, loads nothing.
// Each function takes the view's root element, reads its data from the <script type="application/json"> inside it,
// and draws into its own elements only.
var gpt2pgViews = window.gpt2pgViews = window.gpt2pgViews || {};

(function (views) {
  if (views.attention) return;

  // Blues, as the app's heatmaps (plotly's "Blues"): white at 0, dark blue at the matrix's largest weight.
  var BLUES = [[247, 251, 255], [222, 235, 247], [198, 219, 239], [158, 202, 225], [107, 174, 214], [66, 146, 198],
               [33, 113, 181], [8, 81, 156], [8, 48, 107]];
  function blue(x) {
    var t = Math.max(0, Math.min(1, x)) * (BLUES.length - 1), i = Math.min(BLUES.length - 2, Math.floor(t)), f = t - i;
    var a = BLUES[i], b = BLUES[i + 1];
    return "rgb(" + [0, 1, 2].map(function (c) { return Math.round(a[c] + (b[c] - a[c]) * f); }).join(",") + ")";
  }

  views.attention = function (root) {
    var data = JSON.parse(root.querySelector('script[type="application/json"]').textContent);
    var raw = atob(data.weights), bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    var L = data.layers, H = data.heads, T = data.labels.length;
    // weights[l][h][q][k], quantised to 0..255 of 1 (the hover says so: "≈").
    function matrix(l, h) {  // h === -1: the mean over heads
      var m = new Float32Array(T * T);
      for (var hh = (h < 0 ? 0 : h); hh < (h < 0 ? H : h + 1); hh++) {
        var base = (l * H + hh) * T * T;
        for (var j = 0; j < T * T; j++) m[j] += bytes[base + j] / 255;
      }
      if (h < 0) for (var j2 = 0; j2 < T * T; j2++) m[j2] /= H;
      return m;
    }
    function draw(canvas, m, cell, margin) {
      var ctx = canvas.getContext("2d"), peak = 0;
      // Scaled to the largest weight past the first row: the first token can only attend to itself (weight 1).
      for (var j = (T > 1 ? T : 0); j < T * T; j++) peak = Math.max(peak, m[j]);
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      for (var q = 0; q < T; q++) for (var k = 0; k < T; k++) {
        ctx.fillStyle = k > q ? "#f3f4f6" : blue(peak > 0 ? m[q * T + k] / peak : 0);  // above the diagonal: masked
        ctx.fillRect(margin + k * cell, margin + q * cell, cell, cell);
      }
    }
    var thumbs = root.querySelectorAll("canvas.thumb"), big = root.querySelector("canvas.big");
    var title = root.querySelector(".big-title"), readout = root.querySelector(".readout");
    var cell = Math.max(3, Math.min(24, Math.floor(480 / T))), margin = 96, shown = null, current = null;
    big.width = margin + T * cell + 4;
    big.height = margin + T * cell + 4;
    function select(l, h) {
      current = matrix(l, h);
      shown = [l, h];
      draw(big, current, cell, margin);
      var ctx = big.getContext("2d");
      ctx.fillStyle = "#374151";
      ctx.font = Math.min(12, cell + 2) + "px ui-monospace, Menlo, monospace";
      if (cell >= 7) {  // token labels only where they can be read; the readout names every token
        ctx.textAlign = "right";
        ctx.textBaseline = "middle";
        for (var q = 0; q < T; q++) ctx.fillText(data.labels[q], margin - 4, margin + (q + 0.5) * cell, margin - 8);
        for (var k = 0; k < T; k++) {
          ctx.save();
          ctx.translate(margin + (k + 0.5) * cell, margin - 4);
          ctx.rotate(-Math.PI / 3);
          ctx.textAlign = "left";
          ctx.fillText(data.labels[k], 0, 0, margin);
          ctx.restore();
        }
      }
      title.textContent = data.text.layer.replace("{layer}", l) + ", " +
        (h < 0 ? data.text.mean : data.text.head.replace("{head}", h)) + " · " + data.computed_by;
      thumbs.forEach(function (c) {
        c.classList.toggle("picked", +c.dataset.layer === l && +c.dataset.head === h);
      });
    }
    thumbs.forEach(function (c) {
      var l = +c.dataset.layer, h = +c.dataset.head;
      c.width = T;
      c.height = T;
      draw(c, matrix(l, h), 1, 0);
      c.addEventListener("click", function () { select(l, h); });
    });
    big.addEventListener("mousemove", function (event) {
      var box = big.getBoundingClientRect();
      var k = Math.floor((event.clientX - box.left - margin) / cell), q = Math.floor((event.clientY - box.top - margin) / cell);
      if (q < 0 || k < 0 || q >= T || k >= T || k > q) { readout.textContent = ""; return; }
      readout.textContent = data.text.query + " " + (q + data.first) + " " + JSON.stringify(data.labels[q]) + " → " +
        data.text.key + " " + (k + data.first) + " " + JSON.stringify(data.labels[k]) + ": " + data.text.weight +
        " ≈ " + current[q * T + k].toFixed(3);
    });
    select(data.layer, data.head);
    root.querySelectorAll(".noscript").forEach(function (e) { e.remove(); });
    root.dataset.drawn = "true";
  };
})(gpt2pgViews);
