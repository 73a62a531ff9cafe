/* autoresearch hub charts, drawn with the vendored uPlot (static/vendor/uplot, MIT).
 *
 * The series come from the page itself (a <script type="application/json"> block rendered by
 * autoresearch.hub.views), so the chart never shows anything the tables and the API do not.
 * arCharts.instances maps a plot element id to its uPlot instance (the browser tests read it).
 */
(function () {
  "use strict";
  const C = {
    keep: "#1a7f37", discard: "rgba(140,149,159,0.55)", crash: "#cf222e",
    frontier: "rgba(26,127,55,0.75)", ink: "#1f2328", muted: "#656d76", grid: "#eaeef2",
  };
  const instances = {};

  function readJSON(id) { return JSON.parse(document.getElementById(id).textContent); }
  function esc(s) { return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c])); }
  function fmt(v, d) { return v == null ? "–" : v.toFixed(d); }
  function widthOf(el) { return Math.max(320, el.parentElement.clientWidth - 16); }
  function axis(label, values) {
    return { label: label, stroke: C.muted, grid: { stroke: C.grid, width: 1 }, ticks: { stroke: C.grid, width: 1 }, values: values, labelSize: 18, size: 56 };
  }
  function pointsOnly(label, color, size, fill) {
    return { label: label, stroke: color, fill: fill || color, width: 1, paths: () => null, points: { show: true, space: 0, size: size, stroke: color, fill: fill || color } };
  }
  /* Time ticks in UTC (the hub shows every time in UTC), at the resolution of the visible span:
   * HH:mm:ss under 10 minutes, HH:mm within two days, else the date. A tick whose text equals the
   * one before it is left blank, so an axis never repeats a label. */
  function utcTicks() {
    return (u, splits) => {
      const span = splits.length > 1 ? splits[splits.length - 1] - splits[0] : 0;
      const fmtTick = uPlot.fmtDate(span > 2 * 86400 ? "{YYYY}-{MM}-{DD}" : span < 600 ? "{HH}:{mm}:{ss}" : "{HH}:{mm}");
      let last = null;
      return splits.map((v) => {
        if (v == null) return "";
        const text = fmtTick(uPlot.tzDate(new Date(v * 1e3), "Etc/UTC"));
        if (text === last) return "";
        last = text;
        return text;
      });
    };
  }
  function autoResize(u, el) {
    window.addEventListener("resize", () => u.setSize({ width: widthOf(el), height: u.height }));
  }

  /* Progress chart: val_bpb of every experiment over time, kept runs on the running-best frontier. */
  function progress(plotId, dataId, experimentUrl) {
    const el = document.getElementById(plotId);
    const d = readJSON(dataId);
    const tip = document.createElement("div");
    tip.className = "tip";
    el.parentElement.appendChild(tip);
    const newBest = new Set(d.new_best);
    const labelled = d.new_best.slice(-20);

    const opts = {
      width: widthOf(el), height: 380,
      scales: { x: { time: true }, y: { auto: true } },
      legend: { live: false },
      cursor: { drag: { x: true, y: false }, points: { size: 9 } },
      axes: [
        { stroke: C.muted, space: 90, grid: { stroke: C.grid, width: 1 }, ticks: { stroke: C.grid, width: 1 }, values: utcTicks() },
        axis("val_bpb (bits/byte)", (u, vals) => vals.map((v) => v.toFixed(3))),
      ],
      series: [
        { label: "time" },
        pointsOnly("discard", C.discard, 6),
        pointsOnly("crash (no val_bpb)", C.crash, 6, "#fff"),
        { label: "running best", stroke: C.frontier, width: 2, spanGaps: true, points: { show: false }, paths: uPlot.paths.stepped({ align: 1 }) },
        pointsOnly("keep", C.keep, 8),
      ],
      hooks: {
        draw: [(u) => {
          const ctx = u.ctx;
          ctx.save();
          ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
          ctx.fillStyle = C.ink;
          ctx.textAlign = "left";
          ctx.textBaseline = "bottom";
          let lastX = Infinity;  // newest first; a new best gets a label only when it has room
          for (const i of labelled.slice().reverse()) {
            const x = u.valToPos(d.x[i], "x", true), y = u.valToPos(d.keep[i], "y", true);
            if (x < u.bbox.left || x > u.bbox.left + u.bbox.width || lastX - x < 70 * devicePixelRatio) continue;
            lastX = x;
            const nearRight = x > u.bbox.left + u.bbox.width - 160 * devicePixelRatio;
            ctx.save();
            ctx.textAlign = nearRight ? "right" : "left";  // keep labels inside the plot
            ctx.translate(x + (nearRight ? -6 : 4) * devicePixelRatio, y - 6 * devicePixelRatio);
            ctx.rotate(nearRight ? Math.PI / 7 : -Math.PI / 7);
            const text = d.labels[i].length > 38 ? d.labels[i].slice(0, 37) + "…" : d.labels[i];
            ctx.fillText(text, 0, 0);
            ctx.restore();
          }
          ctx.restore();
        }],
        setCursor: [(u) => {
          const i = u.cursor.idx;
          if (i == null || u.cursor.left < 0) { tip.style.display = "none"; return; }
          const status = d.keep[i] != null ? "keep" : d.discard[i] != null ? "discard" : "crash";
          const val = d.keep[i] ?? d.discard[i];
          tip.innerHTML = `<div><strong>${esc(d.labels[i])}</strong></div>` +
            `<div><span class="badge ${status}">${status}</span> <span class="v">${val == null ? "no val_bpb" : fmt(val, 4) + " bpb"}</span>${newBest.has(i) ? " · new best" : ""}</div>` +
            `<div class="muted">${esc(d.hardware_class)} · ${new Date(d.x[i] * 1000).toISOString().replace("T", " ").slice(0, 19)} UTC</div>`;
          tip.style.display = "block";
          const left = u.cursor.left + u.bbox.left / devicePixelRatio + 18;
          tip.style.left = Math.min(left, el.clientWidth - 260) + "px";
          tip.style.top = (u.cursor.top + 40) + "px";
        }],
      },
    };
    const u = new uPlot(opts, [d.x, d.discard, d.crash, d.frontier, d.keep], el);
    u.over.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    u.over.addEventListener("click", () => {
      const i = u.cursor.idx;
      if (i != null && experimentUrl) window.location.href = experimentUrl + d.ids[i];
    });
    u.over.style.cursor = "pointer";
    autoResize(u, el);
    instances[plotId] = u;
    return u;
  }

  /* Calibration curve: the reference runs and the fitted bpb(t) = c + a·t^(−b), log time axis. */
  function calibration(plotId, dataId) {
    const el = document.getElementById(plotId);
    const d = readJSON(dataId);
    // One x column for both series: the fit grid and the measured points, merged and sorted.
    const xs = Array.from(new Set(d.t.concat(d.points_t))).sort((a, b) => a - b);
    const fitAt = new Map(d.t.map((t, i) => [t, d.fit[i]]));
    const ptAt = new Map(d.points_t.map((t, i) => [t, d.points_bpb[i]]));
    const opts = {
      width: Math.min(widthOf(el), 560), height: 280,
      scales: { x: { time: false, distr: 3 }, y: { auto: true } },
      legend: { live: false },
      axes: [
        axis("training seconds", (u, vals) => vals.map((v) => (v == null ? "" : String(+v.toPrecision(3))))),
        axis("val_bpb (bits/byte)", (u, vals) => vals.map((v) => v.toFixed(3))),
      ],
      series: [
        { label: "seconds" },
        { label: "fit", stroke: C.frontier, width: 2, spanGaps: true, points: { show: false } },
        pointsOnly("reference runs", C.ink, 7),
      ],
      hooks: {
        draw: [(u) => {
          const x = u.valToPos(d.time_budget, "x", true);
          const ctx = u.ctx;
          ctx.save();
          ctx.strokeStyle = C.muted;
          ctx.setLineDash([4 * devicePixelRatio, 4 * devicePixelRatio]);
          ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
          ctx.fillStyle = C.muted;
          ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
          ctx.fillText(" time budget", x, u.bbox.top + 12 * devicePixelRatio);
          ctx.restore();
        }],
      },
    };
    const u = new uPlot(opts, [xs, xs.map((t) => fitAt.get(t) ?? null), xs.map((t) => ptAt.get(t) ?? null)], el);
    instances[plotId] = u;
    return u;
  }

  /* Training-loss curves (one or two runs) against seconds of the time budget. */
  const LOSS_COLORS = ["#0969da", "#bf3989", "#9a6700"];
  function loss(plotId, dataId) {
    const el = document.getElementById(plotId);
    const d = readJSON(dataId);
    const opts = {
      width: widthOf(el), height: 260,
      scales: { x: { time: false }, y: { auto: true } },
      legend: { live: false },
      axes: [
        axis("training seconds (time budget clock)", (u, vals) => vals.map((v) => (v == null ? "" : String(+v.toPrecision(3))))),
        axis("train loss (nats/token)", (u, vals) => vals.map((v) => v.toFixed(2))),
      ],
      series: [{ label: "seconds" }].concat(d.labels.map((label, k) => ({
        label: label.length > 60 ? label.slice(0, 59) + "…" : label,
        stroke: LOSS_COLORS[k % LOSS_COLORS.length], width: 2, spanGaps: true, points: { show: false },
      }))),
    };
    const u = new uPlot(opts, [d.x].concat(d.series), el);
    autoResize(u, el);
    instances[plotId] = u;
    return u;
  }

  window.arCharts = { progress: progress, calibration: calibration, loss: loss, utcTicks: utcTicks, instances: instances };
})();
