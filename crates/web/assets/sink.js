/* mailstorm sink dashboard: polls the sink's GET /dashboard.json once a
   second and renders it with uPlot (throughput, open connections, 4xx/5xx
   and faults per second) and tables (replies by stage x code, faults by
   rule, the referee's clients and verdicts, kept messages), plus the plan
   editor (PUT /plan, errors shown at their line). Every value from the sink
   is set with textContent, never parsed as HTML: EHLO names, headers and
   plan text come from possibly hostile clients. Charts carry data-points
   (samples plotted) and data-max (largest value of their first series) so a
   browser test can check they received data. Auth: same-origin requests
   carry the sink's HttpOnly cookie (see the sink's control/dashboard.rs). */
var MailstormSink = (function () {
  "use strict";

  var COLORS = ["#0969da", "#cf222e", "#2da44e", "#bf8700", "#8250df", "#57606a"];
  var POLL_MS = 1000;
  var WINDOW = 300; // samples kept per chart: five minutes at one a second
  var errors = [];
  var root, charts = {}, series = { t: [], acc: [], rej: [], open: [], r4: [], r5: [], faults: [] };
  var prev = null, query = "", polls = 0, lastPlanFaults = null;

  function showErrors() {
    var box = document.getElementById("errors");
    if (box && errors.length) {
      box.textContent = "Dashboard error: " + errors.join("; ");
      box.hidden = false;
    }
  }

  // The report page's helpers (report.js is loaded first): one front end.
  var el = MailstormReport.el;
  var num = MailstormReport.num;

  function section(id, title) {
    var s = el("section", { id: id });
    s.appendChild(el("h2", {}, title));
    root.appendChild(s);
    return s;
  }

  /* Replaces the rows of table `t` (head: column titles). */
  function fill(t, head, rows, rowAttrs) {
    while (t.firstChild) { t.removeChild(t.firstChild); }
    var tr = el("tr");
    head.forEach(function (h, i) { tr.appendChild(el("th", i === 0 ? { "class": "l" } : {}, h)); });
    t.appendChild(tr);
    rows.forEach(function (r, k) {
      var row = el("tr", rowAttrs ? rowAttrs(k) : {});
      r.forEach(function (c, i) {
        if (c instanceof Node) { var td = el("td", i === 0 ? { "class": "l" } : {}); td.appendChild(c); row.appendChild(td); }
        else { row.appendChild(el("td", i === 0 ? { "class": "l" } : {}, c)); }
      });
      t.appendChild(row);
    });
  }

  function chart(parent, id, title, ylabel, names) {
    var box = el("div", { "class": "chart", id: id, "data-points": "0", "data-max": "0" });
    parent.appendChild(box);
    var w = Math.max(320, Math.min(960, (parent.clientWidth || 960)));
    var u = new uPlot({
      title: title, width: w, height: 220,
      scales: { x: { time: true } },
      axes: [{}, { label: ylabel }],
      series: [{}].concat(names.map(function (n, i) {
        return { label: n, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true, points: { show: false } };
      }))
    }, [[]].concat(names.map(function () { return []; })), box);
    charts[id] = { u: u, box: box };
  }

  function setChart(id, cols) {
    var c = charts[id];
    c.u.setData([series.t].concat(cols));
    var max = 0;
    cols[0].forEach(function (v) { if (v !== null && v > max) { max = v; } });
    c.box.setAttribute("data-points", String(series.t.length));
    c.box.setAttribute("data-max", String(Math.round(max * 1000) / 1000));
  }

  function sum(obj, pred) {
    var n = 0;
    Object.keys(obj || {}).forEach(function (stage) {
      Object.keys(obj[stage]).forEach(function (code) { if (pred(Number(code))) { n += obj[stage][code]; } });
    });
    return n;
  }

  function faultTotal(list) {
    return (list || []).reduce(function (n, r) { return n + r.faults; }, 0);
  }

  /* One sample per poll: rates from the counters' deltas over the sink's
     own uptime (a reset, where counters go back, starts afresh). */
  function sample(d) {
    var s = d.stats;
    var now = {
      up: s.uptime_secs, acc: s.messages_accepted, rej: s.messages_rejected,
      r4: sum(s.replies, function (c) { return c >= 400 && c < 500; }),
      r5: sum(s.replies, function (c) { return c >= 500; }),
      faults: faultTotal(d.faults)
    };
    if (prev && now.up > prev.up && now.acc >= prev.acc && now.rej >= prev.rej) {
      var dt = now.up - prev.up;
      var rate = function (k) { return Math.max(0, now[k] - prev[k]) / dt; };
      series.t.push(Date.now() / 1000);
      series.acc.push(rate("acc"));
      series.rej.push(rate("rej"));
      series.open.push(s.connections_open);
      series.r4.push(rate("r4"));
      series.r5.push(rate("r5"));
      series.faults.push(rate("faults"));
      Object.keys(series).forEach(function (k) { if (series[k].length > WINDOW) { series[k].shift(); } });
      setChart("chart-throughput", [series.acc, series.rej]);
      setChart("chart-connections", [series.open]);
      setChart("chart-replies", [series.r4, series.r5, series.faults]);
    }
    prev = now;
  }

  function figures(d) {
    var s = d.stats, last = series.acc.length ? series.acc[series.acc.length - 1] : null;
    var list = [["msgs/s", num(last, 1), "fig-rate"], ["accepted", num(s.messages_accepted), "fig-accepted"],
      ["rejected", num(s.messages_rejected), "fig-rejected"], ["open connections", num(s.connections_open), "fig-open"],
      ["connections", num(s.connections_total), "fig-connections"], ["faults injected", num(faultTotal(d.faults)), "fig-faults"],
      ["uptime s", num(s.uptime_secs, 0), "fig-uptime"]];
    var box = document.getElementById("figures");
    while (box.firstChild) { box.removeChild(box.firstChild); }
    list.forEach(function (f) {
      var x = el("div", { "class": "figure" });
      x.appendChild(el("div", { "class": "v", id: f[2] }, f[1]));
      x.appendChild(el("div", { "class": "k" }, f[0]));
      box.appendChild(x);
    });
  }

  function replies(d) {
    var R = d.stats.replies || {}, codes = [];
    Object.keys(R).forEach(function (st) {
      Object.keys(R[st]).forEach(function (c) { if (codes.indexOf(c) < 0) { codes.push(c); } });
    });
    codes.sort();
    fill(document.getElementById("replies"), ["stage"].concat(codes), Object.keys(R).map(function (st) {
      return [st].concat(codes.map(function (c) { return R[st][c] === undefined ? "" : num(R[st][c]); }));
    }));
  }

  function faults(d) {
    var list = d.faults || [];
    fill(document.getElementById("faults"), ["rule", "plan", "#", "stage", "faults"], list.map(function (r) {
      return [r.name, r.scope === null ? "global" : "helo " + r.scope, r.index, r.stage, num(r.faults)];
    }), function (k) { return { "data-rule": list[k].name, "class": list[k].faults > 0 ? "fired" : "" }; });
    var rules = list.filter(function (r) { return r.scope === null; });
    var key = JSON.stringify(rules.map(function (r) { return [r.name, r.stage]; }));
    if (key !== lastPlanFaults) {
      lastPlanFaults = key;
      var ul = document.getElementById("plan-rules");
      while (ul.firstChild) { ul.removeChild(ul.firstChild); }
      if (!rules.length) { ul.appendChild(el("li", { "class": "muted" }, "no rules: normal behaviour")); }
      rules.forEach(function (r) { ul.appendChild(el("li", { "data-rule": r.name }, r.name + " (" + r.stage + ")")); });
    }
  }

  /* The three behaviours the issue names, then the verdict. */
  var BEHAVIOUR = [["retry_4xx_min_interval", "4xx retried after"], ["resent_after_5xx", "re-sent after 5xx"],
    ["commands_after_421", "commands after 421"]];

  function ruleCell(rules, name) {
    var r = (rules || []).filter(function (x) { return x.rule === name; })[0];
    if (!r) { return el("span", { "class": "muted" }, "-"); }
    var mark = r.result === "pass" ? "✓ " : (r.result === "fail" ? "✗ " : "");
    var span = el("span", { "class": "v-" + r.result, title: r.expression + (r.evidence.length ? "\n" + r.evidence.join("\n") : "") },
      mark + (r.measured === null ? "untested" : r.measured));
    return span;
  }

  function clients(d) {
    var list = d.clients || [];
    var t = document.getElementById("clients");
    fill(t, ["client (EHLO name)", "addresses", "connections", "open", "messages", "faults", "DNS queries"]
      .concat(BEHAVIOUR.map(function (b) { return b[1]; })).concat(["verdict"]), list.map(function (c) {
      var failing = (c.rules || []).filter(function (r) { return r.result === "fail"; }).map(function (r) { return r.expression; });
      var v = el("span", { "class": "v-" + c.verdict, title: failing.join("\n") },
        c.verdict + (failing.length ? ": " + failing.join(", ") : ""));
      return [c.id, (c.ips || []).join(", "), num(c.connections), num(c.open), num(c.messages), num(c.faults), num((c.dns || {}).queries || 0)]
        .concat(BEHAVIOUR.map(function (b) { return ruleCell(c.rules, b[0]); })).concat([v]);
    }), function (k) { return { "data-client": list[k].id, "class": "verdict-" + list[k].verdict }; });
    var more = document.getElementById("clients-more");
    more.textContent = d.clients_total > list.length ? (d.clients_total - list.length) + " more clients not listed" : "";
    if (d.clients === null) { more.textContent = "no referee (the sink has no fault engine)"; }
  }

  function messages(d) {
    var m = d.messages || { messages: [] };
    var list = m.messages || [];
    fill(document.getElementById("messages"), ["subject", "from", "to", "client", "size", "received", ""], list.map(function (x) {
      var b = el("button", { type: "button", "data-open": String(x.id) }, "open");
      b.addEventListener("click", function () { openMessage(x.id); });
      return [x.subject === null ? "(no subject)" : x.subject, x.mail_from || "<>", (x.rcpt_to || []).join(", "),
        x.helo + " [" + x.client + "]", num(x.size), new Date(x.received_unix_ms).toLocaleTimeString(), b];
    }), function (k) { return { "data-id": String(list[k].id) }; });
    document.getElementById("messages-count").textContent = num(m.matched) + " of " + num(m.kept) +
      " kept messages match" + (m.matched > list.length ? " (newest " + list.length + " shown)" : "");
  }

  function openMessage(id) {
    return fetch("messages/" + encodeURIComponent(id), { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) { throw new Error("message " + id + ": HTTP " + r.status); }
      return r.text();
    }).then(function (raw) {
      var cut = raw.indexOf("\r\n\r\n"), head = cut < 0 ? raw : raw.slice(0, cut), body = cut < 0 ? "" : raw.slice(cut + 4);
      var box = document.getElementById("message-view");
      box.hidden = false;
      box.setAttribute("data-id", String(id));
      document.getElementById("message-title").textContent = "Message " + id;
      document.getElementById("message-headers").textContent = head;
      document.getElementById("message-body").textContent = body.length > 262144 ? body.slice(0, 262144) + "\n[… truncated]" : body;
    }).catch(function (e) { status("message: " + e.message, true); });
  }

  function status(text, bad) {
    var s = document.getElementById("status");
    s.textContent = text;
    s.className = bad ? "bad" : "muted";
  }

  /* ---- plan editor: line numbers, the bad line highlighted ---- */

  function planLines() {
    var ta = document.getElementById("plan-text");
    var n = ta.value.split("\n").length;
    ta.rows = Math.max(8, n + 1);
    var bad = Number(ta.getAttribute("data-error-line") || 0);
    var g = document.getElementById("plan-gutter"), back = document.getElementById("plan-backdrop");
    while (g.firstChild) { g.removeChild(g.firstChild); }
    while (back.firstChild) { back.removeChild(back.firstChild); }
    ta.value.split("\n").forEach(function (line, i) {
      g.appendChild(el("div", i + 1 === bad ? { "class": "bad", id: "plan-bad-line" } : {}, String(i + 1)));
      back.appendChild(el("div", i + 1 === bad ? { "class": "bad" } : {}, line || " "));
    });
  }

  function planMark(line) {
    var ta = document.getElementById("plan-text");
    if (line) { ta.setAttribute("data-error-line", String(line)); } else { ta.removeAttribute("data-error-line"); }
    planLines();
  }

  function loadPlan() {
    return fetch("plan", { credentials: "same-origin" }).then(function (r) {
      if (r.status === 404) { return null; }
      if (!r.ok) { throw new Error("GET /plan: HTTP " + r.status); }
      return r.text();
    }).then(function (text) {
      var ta = document.getElementById("plan-text");
      if (text === null) {
        ta.disabled = true;
        document.getElementById("plan-status").textContent = "this sink has no fault plan support";
        return;
      }
      ta.value = text;
      planMark(0);
    });
  }

  function applyPlan() {
    var ta = document.getElementById("plan-text"), st = document.getElementById("plan-status");
    st.textContent = "applying…";
    st.className = "muted";
    return fetch("plan", { method: "PUT", credentials: "same-origin", headers: { "Content-Type": "application/yaml" },
      body: ta.value }).then(function (r) {
      return r.text().then(function (text) { return { ok: r.ok, status: r.status, text: text }; });
    }).then(function (r) {
      if (r.ok) {
        planMark(0);
        st.textContent = "applied";
        st.className = "ok";
        st.setAttribute("data-result", "applied");
        lastPlanFaults = null;
        return poll(true);
      }
      var m = /:(\d+):(\d+): ([\s\S]*)$/.exec(r.text.trim());
      planMark(m ? Number(m[1]) : 0);
      st.textContent = (m ? "line " + m[1] + ", column " + m[2] + ": " + m[3] : "HTTP " + r.status + ": " + r.text.trim()) +
        " (the active plan is unchanged)";
      st.className = "bad";
      st.setAttribute("data-result", "error");
      var bad = document.getElementById("plan-bad-line");
      if (bad) { bad.scrollIntoView({ block: "nearest" }); }
    }).catch(function (e) { st.textContent = "apply failed: " + e.message; st.className = "bad"; });
  }

  function layout() {
    var fig = el("div", { "class": "figures", id: "figures" });
    root.appendChild(fig);
    var live = section("live", "Live");
    chart(live, "chart-throughput", "Messages per second", "msgs/s", ["accepted", "rejected"]);
    chart(live, "chart-connections", "Open connections", "connections", ["open"]);
    chart(live, "chart-replies", "Refusals and faults per second", "per s", ["4xx replies", "5xx replies", "faults injected"]);
    section("replies-section", "Replies by stage × code").appendChild(el("table", { id: "replies" }));
    section("faults-section", "Injected faults by rule").appendChild(el("table", { id: "faults" }));
    var cs = section("clients-section", "Clients (referee)");
    cs.appendChild(el("p", { "class": "muted" }, "One row per client id: the EHLO name its sessions sent, or its address " +
      "when it never greeted (DNS queries carry no EHLO name: they count under the address). A well-behaved client retries a 4xx after a sane interval, never re-sends after a 5xx " +
      "and stops after a 421; hover a cell for the rule and evidence."));
    cs.appendChild(el("table", { id: "clients" }));
    cs.appendChild(el("p", { "class": "muted", id: "clients-more" }));
    var ms = section("messages-section", "Kept messages");
    var search = el("input", { type: "search", id: "msg-search", placeholder: "search sender, recipient or subject", size: "40" });
    search.addEventListener("input", function () { query = search.value; poll(true); });
    ms.appendChild(search);
    ms.appendChild(el("span", { "class": "muted", id: "messages-count" }));
    ms.appendChild(el("table", { id: "messages" }));
    var view = el("div", { id: "message-view", "class": "message", hidden: "" });
    view.appendChild(el("h3", { id: "message-title" }));
    view.appendChild(el("pre", { id: "message-headers", "class": "headers" }));
    view.appendChild(el("pre", { id: "message-body" }));
    ms.appendChild(view);
    var ps = section("plan-section", "Fault plan");
    ps.appendChild(el("p", { "class": "muted" }, "Active rules:"));
    ps.appendChild(el("ul", { id: "plan-rules" }));
    var ed = el("div", { "class": "plan-editor" });
    ed.appendChild(el("div", { id: "plan-gutter", "class": "gutter" }));
    var stack = el("div", { "class": "stack" });
    stack.appendChild(el("div", { id: "plan-backdrop", "class": "backdrop", "aria-hidden": "true" }));
    var ta = el("textarea", { id: "plan-text", spellcheck: "false", wrap: "off", "aria-label": "fault plan (YAML)" });
    ta.addEventListener("input", planLines);
    stack.appendChild(ta);
    ed.appendChild(stack);
    ps.appendChild(ed);
    var apply = el("button", { type: "button", id: "plan-apply" }, "Validate and apply");
    apply.addEventListener("click", applyPlan);
    var revert = el("button", { type: "button", id: "plan-revert" }, "Reload active plan");
    revert.addEventListener("click", function () { loadPlan().catch(fail); });
    ps.appendChild(apply);
    ps.appendChild(revert);
    ps.appendChild(el("div", { id: "plan-status", "class": "muted" }));
  }

  function fail(e) { errors.push(String(e && e.stack || e)); showErrors(); }

  var inflight = null, timer = null;

  /* One feed request; `now`: poll at once (a search or an apply) rather
     than wait for the next tick. */
  function poll(now) {
    if (inflight) { return inflight; }
    if (now && timer) { clearTimeout(timer); timer = null; }
    var started = Date.now();
    inflight = fetch("dashboard.json?limit=25&q=" + encodeURIComponent(query), { credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401) { throw new Error("unauthorized: reload the page and give the token"); }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      }).then(function (d) {
        sample(d);
        figures(d);
        replies(d);
        faults(d);
        clients(d);
        messages(d);
        polls += 1;
        root.setAttribute("data-polls", String(polls));
        status("live · updated " + new Date().toLocaleTimeString(), false);
      }).catch(function (e) {
        status("disconnected: " + e.message + " (retrying)", true);
      }).then(function () {
        inflight = null;
        if (!timer) { timer = setTimeout(function () { timer = null; poll(false); }, Math.max(0, POLL_MS - (Date.now() - started))); }
      });
    return inflight;
  }

  function boot(element) {
    window.addEventListener("error", function (e) { errors.push(String(e.message)); showErrors(); });
    try {
      root = element;
      layout();
      root.setAttribute("data-rendered", "true");
      loadPlan().catch(fail);
      poll(true);
    } catch (e) {
      fail(e);
    }
  }

  return { boot: boot, poll: poll, openMessage: openMessage, applyPlan: applyPlan };
})();
