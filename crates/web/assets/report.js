/* mailstorm report page: renders a report model (mailstorm.report/2 from a
   blaster run, mailstorm.capacity/1 from a capacity search) with uPlot.
   Layout and data shaping only: every chart is drawn by uPlot. Each chart's
   element carries data-points (x values plotted) and data-series so a
   browser test can check the charts hold the data. live(url) is the same
   page fed by a running blaster: it polls the report model and re-renders
   it until the outcome is no longer "running". */
var MailstormReport = (function () {
  "use strict";

  var COLORS = ["#0969da", "#cf222e", "#2da44e", "#bf8700", "#8250df", "#57606a", "#e16f24"];
  var errors = [];
  var charts = [];

  function showErrors() {
    var el = document.getElementById("errors");
    if (el && errors.length) {
      el.textContent = "Report page error: " + errors.join("; ");
      el.hidden = false;
    }
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function num(v, digits) {
    if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) { return "-"; }
    return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 0 : digits });
  }

  function ms(us) { return us === null || us === undefined ? "-" : num(us / 1000, 2); }

  function msOrNull(us) { return us === null || us === undefined ? null : us / 1000; }

  function width(root) { return Math.max(480, Math.min(960, (root.clientWidth || 960))); }

  /* One uPlot chart. series: [{label, values, color?, dash?, points?, line?}] */
  function chart(root, id, title, xlabel, ylabel, xs, series) {
    var box = el("div", { "class": "chart", id: id });
    root.appendChild(box);
    var opts = {
      title: title,
      width: width(root),
      height: 280,
      scales: { x: { time: false } },
      axes: [{ label: xlabel }, { label: ylabel }],
      series: [{ label: xlabel }].concat(series.map(function (s, i) {
        var c = s.color || COLORS[i % COLORS.length];
        var o = { label: s.label, stroke: c, width: 2, spanGaps: true,
                  points: { show: s.points !== false, size: s.size || 6, fill: c } };
        if (s.dash) { o.dash = [6, 4]; }
        if (s.line === false) { o.paths = function () { return null; }; }
        return o;
      }))
    };
    var data = [xs].concat(series.map(function (s) { return s.values; }));
    var u = new uPlot(opts, data, box);
    charts.push(u);
    box.setAttribute("data-points", String(u.data[0].length));
    box.setAttribute("data-series", String(u.series.length - 1));
    return u;
  }

  function table(root, head, rows, rowClass) {
    var t = el("table");
    var tr = el("tr");
    head.forEach(function (h, i) { tr.appendChild(el("th", i === head.length - 1 ? { "class": "l" } : {}, h)); });
    t.appendChild(tr);
    rows.forEach(function (r, k) {
      var row = el("tr", rowClass ? { "class": rowClass(k) } : {});
      r.forEach(function (c, i) { row.appendChild(el("td", i === r.length - 1 ? { "class": "l" } : {}, c)); });
      t.appendChild(row);
    });
    root.appendChild(t);
    return t;
  }

  function figures(root, list) {
    var box = el("div", { "class": "figures" });
    list.forEach(function (f) {
      var d = el("div", { "class": "figure" });
      d.appendChild(el("div", { "class": "v" }, f[1]));
      d.appendChild(el("div", { "class": "k" }, f[0]));
      box.appendChild(d);
    });
    root.appendChild(box);
  }

  function timeline(root, rows, interval) {
    if (!rows || !rows.length) { return; }
    root.appendChild(el("h2", {}, "Timeline"));
    var per = function (k) { return rows.map(function (r) { return r[k] === undefined ? null : r[k] / interval; }); };
    var xs = rows.map(function (r) { return r.t_s; });
    chart(root, "chart-timeline-rate", "Load over time (per second)", "time (s)", "messages/s", xs, [
      { label: "offered", values: per("offered"), dash: true },
      { label: "accepted", values: per("accepted") },
      { label: "deferred (4xx)", values: per("deferred") },
      { label: "rejected (5xx)", values: per("rejected") },
      { label: "failed", values: per("failed") },
      { label: "late", values: per("late") },
      { label: "never started", values: per("not_started") }
    ]);
    chart(root, "chart-timeline-latency", "Latency over time", "time (s)", "ms", xs, [
      { label: "p50", values: rows.map(function (r) { return msOrNull(r.p50_us); }) },
      { label: "p99", values: rows.map(function (r) { return msOrNull(r.p99_us); }) }
    ]);
    if (rows.some(function (r) { return r.open_connections !== undefined; })) {
      chart(root, "chart-timeline-conns", "Open connections", "time (s)", "connections", xs, [
        { label: "open", values: rows.map(function (r) { return r.open_connections === undefined ? null : r.open_connections; }) }
      ]);
    }
    // --target-pid / --target-metrics: the target's resources beside the load.
    if (rows.some(function (r) { return r.target_cpu_pct !== undefined; })) {
      chart(root, "chart-timeline-target", "Target CPU (% of one core)", "time (s)", "%", xs, [
        { label: "target CPU", values: rows.map(function (r) { return r.target_cpu_pct === undefined ? null : r.target_cpu_pct; }) }
      ]);
    }
  }

  function capacity(root, m) {
    var cap = m.capacity || {};
    var steps = (m.steps || []).slice().sort(function (a, b) { return a.offered_rate - b.offered_rate; });
    var bad = cap.knee_rate === null || cap.knee_rate === undefined || cap.limited_by === "generator";
    var v = el("div", { "class": "verdict" + (bad ? " bad" : ""), id: "verdict" }, cap.verdict || "no verdict");
    root.appendChild(v);
    figures(root, [
      ["capacity (msgs/s)", num(cap.knee_rate)],
      ["per hour", num(cap.per_hour)],
      ["p99 at the knee (ms)", ms(cap.knee_p99_us)],
      ["max throughput seen (msgs/s)", num(cap.max_throughput)],
      ["limited by", cap.limited_by || "-"],
      ["steps", String(steps.length)]
    ]);
    var s = m.search || {};
    root.appendChild(el("p", { "class": "muted" },
      "Target " + (m.targets || []).join(", ") + "; SLA " + s.sla + " and achieved ≥ " +
      num((s.min_achieved || 0) * 100) + "% of offered; abort if " + s.abort_if + "; steps of " +
      num(s.warmup_s, 1) + " s warm-up + " + num(s.step_duration_s, 1) + " s from " + num(s.start_rate) +
      " msgs/s (×" + num(s.step_factor, 2) + "), bisection to " + num((s.precision || 0) * 100, 1) + "%." +
      (m.interrupted ? " Interrupted: partial results." : "")));
    var xs = steps.map(function (x) { return x.offered_rate; });
    var kneeIdx = steps.findIndex(function (x) { return x.index === cap.knee_step; });
    root.appendChild(el("h2", {}, "Throughput against offered load"));
    chart(root, "chart-throughput", "Achieved vs offered (knee marked)", "offered (msgs/s)", "msgs/s", xs, [
      { label: "achieved", values: steps.map(function (x) { return x.achieved_rate; }) },
      { label: "offered (ideal)", values: xs.slice(), dash: true, points: false, color: "#8c959f" },
      { label: "knee", values: steps.map(function (x, i) { return i === kneeIdx ? x.achieved_rate : null; }),
        line: false, size: 14, color: "#cf222e" }
    ]);
    root.appendChild(el("h2", {}, "Latency against offered load"));
    var q = function (k) { return steps.map(function (x) { return x.latency_us ? msOrNull(x.latency_us[k]) : null; }); };
    chart(root, "chart-latency", "Message latency percentiles", "offered (msgs/s)", "ms", xs, [
      { label: "p50", values: q("p50") }, { label: "p95", values: q("p95") },
      { label: "p99", values: q("p99") }, { label: "max", values: q("max"), dash: true }
    ]);
    root.appendChild(el("h2", {}, "Replies and errors against offered load"));
    chart(root, "chart-replies", "Per step (measurement window)", "offered (msgs/s)", "count", xs, [
      { label: "4xx", values: steps.map(function (x) { return x.replies_4xx; }) },
      { label: "5xx", values: steps.map(function (x) { return x.replies_5xx; }) },
      { label: "transport errors", values: steps.map(function (x) { return x.transport_errors_total; }) },
      { label: "late", values: steps.map(function (x) { return x.late; }) },
      { label: "never started", values: steps.map(function (x) { return x.not_started; }) }
    ]);
    timeline(root, m.timeline, s.interval_s || 1);
    root.appendChild(el("h2", {}, "Steps"));
    table(root, ["step", "phase", "offered/s", "achieved/s", "accept", "p50 ms", "p95 ms", "p99 ms", "max ms",
      "4xx", "5xx", "errors", "late", "never started", "conns", "gen CPU %", "gen kept up", "target CPU %", "verdict"],
      steps.map(function (x) {
        var why = x.passed ? "ok" : (x.aborted ? "aborted: " + x.aborted : "failed: " + (x.reason || ""));
        return [x.index, x.phase, num(x.offered_rate), num(x.achieved_rate), num(x.accept_rate * 100, 2) + "%",
          ms(x.latency_us && x.latency_us.p50), ms(x.latency_us && x.latency_us.p95),
          ms(x.latency_us && x.latency_us.p99), ms(x.latency_us && x.latency_us.max),
          x.replies_4xx, x.replies_5xx, x.transport_errors_total, x.late, x.not_started, x.connections,
          num(x.generator_cpu_pct), x.generator_kept_up ? "yes" : "no", num(x.target_cpu_pct), why];
      }),
      function (k) { return k === kneeIdx ? "knee" : (steps[k].passed ? "" : "fail"); });
    var names = [];
    steps.forEach(function (x) {
      Object.keys(x.stages_us || {}).forEach(function (k) { if (names.indexOf(k) < 0) { names.push(k); } });
    });
    if (names.length) {
      root.appendChild(el("h2", {}, "SMTP stages per step (p99 ms)"));
      table(root, ["offered/s"].concat(names).concat(["step"]), steps.map(function (x) {
        return [num(x.offered_rate)].concat(names.map(function (k) {
          var q = (x.stages_us || {})[k];
          return q ? ms(q.p99) : "-";
        })).concat([String(x.index)]);
      }));
    }
  }

  function run(root, m) {
    var o = m.outcome || {};
    var ok = o.status === "ok";
    var running = o.status === "running";
    var msgs = m.messages || {};
    var tp = (m.throughput || {}).messages_per_s;
    var lat = (m.latency_us || {}).latency || {};
    var text = (ok ? "passed" : running ? "running" : "did not pass (" + (o.status || "unknown") + ")") + ": " +
      num(msgs.accepted) +
      " of " + num(msgs.attempted) + " messages accepted, " + num(tp, 1) + " msgs/s, p99 " + ms(lat.p99) + " ms" +
      ((o.reasons && o.reasons.length) ? "; " + o.reasons.join("; ") : "");
    root.appendChild(el("div", { "class": "verdict" + (ok ? "" : running ? " warn" : " bad"), id: "verdict" }, text));
    figures(root, [
      ["accepted", num(msgs.accepted)], ["deferred", num(msgs.deferred)], ["rejected", num(msgs.rejected)],
      ["failed", num(msgs.failed)], ["msgs/s", num(tp, 1)], ["p99 ms", ms(lat.p99)],
      ["duration s", num(m.duration_s, 2)]
    ]);
    root.appendChild(el("p", { "class": "muted" }, "Target " + (m.targets || []).join(", ") +
      (m.interrupted ? "; interrupted: partial results." : ".")));
    if (m.thresholds && m.thresholds.length) {
      root.appendChild(el("h2", {}, "Thresholds"));
      table(root, ["measured", "verdict", "check"], m.thresholds.map(function (t) {
        return [t.measured, t.verdict, t.expression];
      }), function (k) { return m.thresholds[k].verdict === "ok" ? "" : "fail"; });
    }
    /* `--scenario FILE --html`: every expectation with its measured value. */
    var sc = m.scenario;
    if (sc && sc.expectations && sc.expectations.length) {
      root.appendChild(el("h2", {}, "Scenario " + (sc.name || "")));
      table(root, ["measured", "verdict", "expectation"], sc.expectations.map(function (e) {
        return [e.shown !== undefined ? e.shown : num(e.measured, 3), e.passed ? "ok" : "FAILED", e.expect];
      }), function (k) { return sc.expectations[k].passed ? "" : "fail"; }).id = "expectations";
    }
    timeline(root, m.timeline, m.interval_s || 1);
    var st = (m.schedule || {}).stages;
    if (st && st.length) {
      root.appendChild(el("h2", {}, "Load stages"));
      table(root, ["stage", "start s", "length s", "value", "offered/s", "achieved/s", "accept", "p50 ms", "p99 ms",
        "4xx (deferred)", "5xx (rejected)", "errors", "late", "never started", "scheduled"], st.map(function (s, i) {
        var v = s.from === s.to ? num(s.from, 1) : num(s.from, 1) + "→" + num(s.to, 1);
        var acc = s.accept_rate === null || s.accept_rate === undefined ? "-" : num(s.accept_rate * 100, 2) + "%";
        return [i + 1, num(s.start_s, 1), num(s.duration_s, 1), v, num(s.offered_rate, 1), num(s.achieved_rate, 1),
          acc, ms(s.p50_us), ms(s.p99_us), num(s.deferred), num(s.rejected), num(s.failed), num(s.late),
          num(s.not_started), num(s.scheduled)];
      }));
    }
    var L = m.latency_us || {};
    var names = Object.keys(L);
    if (names.length) {
      root.appendChild(el("h2", {}, "Latency by SMTP stage (ms)"));
      table(root, ["count", "p50", "p90", "p99", "p99.9", "max", "stage"], names.map(function (k) {
        var h = L[k];
        return [num(h.count), ms(h.p50), ms(h.p90), ms(h.p99), ms(h.p999), ms(h.max), k];
      }));
    }
    var R = m.replies || {};
    if (Object.keys(R).length) {
      root.appendChild(el("h2", {}, "Replies by stage"));
      table(root, ["stage", "replies"], Object.keys(R).map(function (k) {
        return [k, Object.keys(R[k]).map(function (c) { return c + " ×" + R[k][c]; }).join(", ")];
      }));
    }
    // Transport errors by kind (resets, timeouts, refused connections...):
    // only the kinds that happened.
    var T = m.transport_errors || {};
    var kinds = Object.keys(T).filter(function (k) { return T[k] > 0; });
    if (kinds.length) {
      root.appendChild(el("h2", { id: "transport-errors" }, "Transport errors"));
      table(root, ["count", "kind"], kinds.map(function (k) { return [num(T[k]), k]; }));
    }
    // Domain and relay targets (report `routing`): DNS counters, relays.
    var G = m.routing || {};
    if (G.dns) {
      root.appendChild(el("h2", {}, "DNS"));
      table(root, ["queries", "cache hits", "timeouts", "SERVFAIL", "NXDOMAIN", "other"], [[
        num(G.dns.queries), num(G.dns.cache_hits), num(G.dns.timeouts), num(G.dns.servfail),
        num(G.dns.nxdomain), num(G.dns.other_failures)]]);
    }
    if (G.relays && G.relays.length) {
      root.appendChild(el("h2", {}, "Relays"));
      table(root, ["relay", "weight", "picked", "connected", "failed", "ejections", "probes", "state"],
        G.relays.map(function (r) {
          return [r.relay, num(r.weight), num(r.picked), num(r.connected), num(r.failed),
            num(r.ejections), num(r.probes), r.ejected ? "out" : "in"];
        }));
    }
    ledger(root, m.ledger);
  }

  // The ledger join (report `ledger`): what the downstream sink received of
  // what the target accepted, and the end-to-end latency.
  function ledger(root, j) {
    if (!j) { return; }
    root.appendChild(el("h2", { id: "ledger" }, "End to end (ledger)"));
    var bad = j.lost > 0 || j.duplicates > 0 || j.unexpected > 0;
    root.appendChild(el("p", { "class": bad ? "muted bad" : "muted" },
      "Run " + j.run + ", source " + j.source + ", read from " + j.from + "; " +
      (j.drained ? "every accepted recipient arrived" : "drain ran out after " + num(j.waited_s, 1) + " s") + "."));
    table(root, ["accepted", "delivered", "lost", "duplicates", "unexpected", "out of order", "not recorded", "figures"], [[
      num(j.accepted), num(j.delivered), num(j.lost), num(j.duplicates), num(j.unexpected),
      num(j.out_of_order), num(j.dropped), "recipients"]], function () { return bad ? "fail" : ""; });
    var e = j.e2e || {};
    table(root, ["count", "p50", "p90", "p99", "max", "latency"], [[
      num(e.count), ms(e.p50_us), ms(e.p90_us), ms(e.p99_us), ms(e.max_us), "end to end (ms)"]]);
  }

  function render(model, root) {
    try {
      var schema = String(model.schema || "");
      if (schema.indexOf("mailstorm.capacity/") === 0) { capacity(root, model); }
      else if (schema.indexOf("mailstorm.report/") === 0) { run(root, model); }
      else { throw new Error("unknown report schema " + JSON.stringify(schema)); }
      root.setAttribute("data-rendered", "true");
    } catch (e) {
      errors.push(String(e && e.stack || e));
      showErrors();
    }
  }

  /* Live mode: fetch the report model from url every pollMs and redraw it
     (old charts destroyed first, so a long run does not pile them up) until
     its outcome is final. A feed that does not answer is retried and shown
     in #live-status, not as a page error: the run may have just ended. */
  function live(url, pollMs, root) {
    root = root || document.getElementById("report");
    var status = el("p", { "class": "muted", id: "live-status" }, "Live: connecting to " + url + "…");
    root.parentNode.insertBefore(status, root);
    var updates = 0;
    var misses = 0;
    root.setAttribute("data-live", "connecting");
    function again() { setTimeout(tick, pollMs || 1000); }
    function tick() {
      fetch(url, { cache: "no-store" }).then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      }).then(function (model) {
        misses = 0;
        var running = (model.outcome || {}).status === "running";
        charts.forEach(function (u) { u.destroy(); });
        charts = [];
        while (root.firstChild) { root.removeChild(root.firstChild); }
        root.removeAttribute("data-rendered");
        render(model, root);
        updates += 1;
        root.setAttribute("data-updates", String(updates));
        root.setAttribute("data-live", running ? "running" : "final");
        status.textContent = running ? "Live: updated " + new Date().toLocaleTimeString() + " (" + updates +
          " updates, every " + (pollMs || 1000) + " ms)" : "Live: the run ended; final report below.";
        if (running) { again(); }
      }).catch(function (e) {
        misses += 1;
        status.textContent = "Live: no answer from " + url + " (" + e.message + "), retry " + misses;
        root.setAttribute("data-live", "unreachable");
        if (misses < 30) { again(); }
      });
    }
    tick();
  }

  function boot() {
    window.addEventListener("error", function (e) { errors.push(String(e.message)); showErrors(); });
    var data = document.getElementById("report-data");
    var model = JSON.parse(data.textContent);
    if (model.schema === "mailstorm.live/1") { live(model.feed, model.poll_ms); return; }
    render(model, document.getElementById("report"));
  }

  // el and num are shared with the sink dashboard (sink.js): one front end.
  return { render: render, boot: boot, live: live, el: el, num: num };
})();
