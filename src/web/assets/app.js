// Strategist web dashboard: plain JavaScript, no build step, no dependencies.
// Talks to the JSON API of the server that served it, with the API key the user typed in
// (kept in sessionStorage, sent as `Authorization: Bearer …`). Every piece of data is put
// into the page with textContent; chart SVG (drawn by our own server) is parsed as XML,
// stripped of anything active and imported as DOM nodes.
"use strict";

(function () {
  const KEY_STORAGE = "strategist.apiKey";
  const REFRESH_MS = 10000;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const ACTIONS = [
    { action: "start", label: "Start", from: ["draft"],
      text: "Starts serving the experiment's arms to its traffic." },
    { action: "pause", label: "Pause", from: ["running"],
      text: "Pauses the experiment: it stops assigning arms until it is resumed." },
    { action: "resume", label: "Resume", from: ["paused"],
      text: "Resumes assigning arms with the current policy." },
    { action: "promote", label: "Promote…", from: ["running", "paused"],
      text: "Serves the chosen arm to all traffic, beside a holdout on control if one is set." },
    { action: "stop", label: "Stop", from: ["draft", "running", "paused"], danger: true,
      text: "Stops the experiment for good; everyone gets control. It cannot be resumed." },
    { action: "rollback", label: "Roll back", from: null,
      text: "Undoes the last promotion, or returns to the previous version's arms and policy." },
  ];

  const $ = (id) => document.getElementById(id);

  let me = null; // {name, prefix, scopes}
  let route = { page: "login" };
  let current = null; // the experiment shown, as GET /v1/experiments/{key} returns it
  let lastResult = null; // its latest analysis, or null
  let chartCache = new Map(); // chart name → SVG text shown, so a refresh only redraws what changed
  let timer = null;
  let busy = false;

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function apiKey() {
    return sessionStorage.getItem(KEY_STORAGE);
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + (apiKey() || ""), Accept: "application/json" };
    const init = { method: method, headers: headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, "network_error", "the server cannot be reached (" + e.message + ")");
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = null;
    }
    if (!res.ok) {
      const code = data && typeof data.error === "string" ? data.error : "http_" + res.status;
      const message = data && typeof data.message === "string" ? data.message : text.slice(0, 200);
      if (res.status === 401) {
        signOut("The server refused the key: " + message);
      }
      throw new ApiError(res.status, code, message);
    }
    return data;
  }

  const enc = encodeURIComponent;

  // ---------------------------------------------------------------- DOM helpers

  // Builds an element; `text` always goes through textContent.
  function el(tag, opts, children) {
    const node = document.createElement(tag);
    const o = opts || {};
    if (o.className) node.className = o.className;
    if (o.text !== undefined && o.text !== null) node.textContent = String(o.text);
    if (o.title) node.title = o.title;
    if (o.href) node.setAttribute("href", o.href);
    if (o.attrs) {
      for (const k of Object.keys(o.attrs)) node.setAttribute(k, o.attrs[k]);
    }
    for (const c of children || []) {
      if (c !== null && c !== undefined) node.append(c);
    }
    return node;
  }

  function td(text, className, title) {
    return el("td", { text: text, className: className, title: title });
  }

  function show(id, visible) {
    $(id).hidden = !visible;
  }

  function setError(id, message) {
    const node = $(id);
    node.textContent = message || "";
    node.hidden = !message;
  }

  function flash(message) {
    const node = $("flash");
    node.textContent = message;
    node.hidden = false;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => (node.hidden = true), 6000);
  }

  // ---------------------------------------------------------------- formatting

  const DASH = "—";

  function parseTime(t) {
    if (!t) return null;
    // The API's timestamps are UTC without an offset.
    const s = /[zZ]|[+-]\d\d:?\d\d$/.test(t) ? t : t + "Z";
    const d = new Date(s);
    return isNaN(d.getTime()) ? null : d;
  }

  function age(t) {
    const d = parseTime(t);
    if (!d) return DASH;
    const s = Math.max(0, (Date.now() - d.getTime()) / 1000);
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }

  function utc(t) {
    const d = parseTime(t);
    return d ? d.toISOString().replace("T", " ").slice(0, 19) : DASH;
  }

  function num(x, digits) {
    return typeof x === "number" && isFinite(x) ? x.toFixed(digits) : DASH;
  }

  function pct(x, digits, signed) {
    if (typeof x !== "number" || !isFinite(x)) return DASH;
    const s = (x * 100).toFixed(digits === undefined ? 1 : digits) + " %";
    return signed && x > 0 ? "+" + s : s;
  }

  function pval(p) {
    if (!p && p !== 0) return DASH;
    const v = typeof p === "number" ? p : p.p;
    if (typeof v !== "number" || !isFinite(v)) return DASH;
    return v < 0.001 ? "< 0.001" : v.toFixed(3);
  }

  function interval(b, asPct) {
    if (!b) return DASH;
    const f = (x) => (asPct ? pct(x, 1, true) : num(x, 4));
    return "[" + f(b.lower) + ", " + f(b.upper) + "]";
  }

  function words(s) {
    return String(s || "").replace(/_/g, " ");
  }

  function decisionLabel(state) {
    if (!state || !state.kind) return DASH;
    let s = words(state.kind);
    if (state.arm) s += ": " + state.arm;
    if (state.metric) s += " (" + state.metric + ")";
    return s;
  }

  function primaryMetric(result) {
    const ms = (result && result.analysis && result.analysis.metrics) || [];
    return ms.find((m) => m.role === "primary") || ms[0] || null;
  }

  function exposures(result) {
    const m = primaryMetric(result);
    if (!m) return null;
    return m.arms.reduce((n, a) => n + (a.exposures_mature || 0) + (a.exposures_immature || 0), 0);
  }

  function statusBadge(status) {
    return el("span", { className: "status status-" + String(status).replace(/[^a-z_]/g, ""), text: status });
  }

  // ---------------------------------------------------------------- sign in / out

  function signOut(message) {
    sessionStorage.removeItem(KEY_STORAGE);
    me = null;
    stopRefresh();
    show("whoami", false);
    for (const id of ["list", "experiment"]) show(id, false);
    show("login", true);
    setError("login-error", message || "");
    $("api-key").value = "";
    $("api-key").focus();
  }

  async function signIn(key) {
    sessionStorage.setItem(KEY_STORAGE, key);
    try {
      me = await api("GET", "/v1/whoami");
    } catch (e) {
      if (e.status !== 401) signOut("Cannot sign in: " + e.message);
      return false;
    }
    if (!me.scopes.includes("read") && !me.scopes.includes("admin")) {
      signOut("This key has scope `" + me.scopes.join(", ") + "`; the dashboard needs a read or admin key.");
      return false;
    }
    $("whoami-name").textContent = me.name + " (" + me.prefix + "…)";
    $("whoami-scope").textContent = me.scopes.join(", ");
    show("whoami", true);
    show("login", false);
    return true;
  }

  function isAdmin() {
    return !!me && me.scopes.includes("admin");
  }

  // ---------------------------------------------------------------- routing

  function parseRoute() {
    const h = location.hash || "#/";
    const m = /^#\/e\/(.+)$/.exec(h);
    if (m) return { page: "experiment", key: decodeURIComponent(m[1]) };
    return { page: "list" };
  }

  async function navigate() {
    if (!me) return;
    route = parseRoute();
    show("list", route.page === "list");
    show("experiment", route.page === "experiment");
    if (route.page === "experiment" && (!current || current.key !== route.key)) {
      current = null;
      lastResult = null;
      chartCache = new Map();
      $("charts").replaceChildren();
      $("exp-name").textContent = route.key;
    }
    await refresh();
    startRefresh();
  }

  function startRefresh() {
    stopRefresh();
    timer = setInterval(refresh, REFRESH_MS);
  }

  function stopRefresh() {
    if (timer) clearInterval(timer);
    timer = null;
  }

  async function refresh() {
    if (busy || !me) return;
    busy = true;
    try {
      if (route.page === "experiment") await renderExperiment(route.key);
      else await renderList();
    } finally {
      busy = false;
    }
  }

  // ---------------------------------------------------------------- experiments list

  async function resultOrNull(key) {
    try {
      return await api("GET", "/v1/experiments/" + enc(key) + "/results");
    } catch (e) {
      if (e.code === "no_analysis_yet") return null;
      throw e;
    }
  }

  async function renderList() {
    let list;
    try {
      list = await api("GET", "/v1/experiments");
    } catch (e) {
      setError("list-error", "Cannot load experiments: " + e.message);
      return;
    }
    const results = await Promise.all(
      list.map((x) => resultOrNull(x.key).catch((e) => ({ failed: e.message }))),
    );
    const rows = list.map((x, i) => {
      const r = results[i];
      const failed = r && r.failed;
      const analysed = r && !failed;
      const leader = x.promoted_arm
        ? x.promoted_arm + " (promoted)"
        : analysed && r.analysis.decision.checks.best_arm
          ? r.analysis.decision.checks.best_arm
          : DASH;
      const decision = failed ? "error: " + failed : analysed ? decisionLabel(r.analysis.decision.state) : "no analysis yet";
      const n = analysed ? exposures(r) : null;
      const link = el("a", { href: "#/e/" + enc(x.key), text: x.name, className: "exp-link" });
      return el("tr", { attrs: { "data-key": x.key } }, [
        el("td", {}, [link, el("div", { className: "muted small", text: x.key })]),
        el("td", {}, [statusBadge(x.status)]),
        td(age(x.created_at), "", utc(x.created_at) + " UTC"),
        td(pct(x.definition.traffic, 0), "num"),
        td(n === null ? DASH : n.toLocaleString("en-US"), "num"),
        td(leader),
        el("td", {}, [el("span", { className: "badge decision-" + (analysed ? r.analysis.decision.state.kind : "none"), text: decision })]),
      ]);
    });
    $("experiments").tBodies[0].replaceChildren(...rows);
    show("list-empty", list.length === 0);
    setError("list-error", "");
    $("list-updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  // ---------------------------------------------------------------- one experiment

  async function renderExperiment(key) {
    const path = "/v1/experiments/" + enc(key);
    const expP = api("GET", path);
    const resultP = resultOrNull(key);
    const chartsP = Promise.all([expP, resultP.catch(() => null)]).then(([x, r]) =>
      api("GET", path + "/charts" + chartRange(x, r)),
    );
    const [exp, result, log, charts] = await Promise.allSettled([expP, resultP, api("GET", path + "/decisions"), chartsP]);
    if (route.page !== "experiment" || route.key !== key) return; // navigated away meanwhile
    if (exp.status === "rejected") {
      setError("exp-error", "Cannot load `" + key + "`: " + exp.reason.message);
      return;
    }
    setError("exp-error", "");
    current = exp.value;
    lastResult = result.status === "fulfilled" ? result.value : null;
    renderHeader(current);
    renderActions(current);
    renderDecision(current, lastResult, result.status === "rejected" ? result.reason : null);
    renderArms(current, lastResult);
    renderCharts(charts);
    if (log.status === "fulfilled") renderAudit(log.value);
    $("exp-updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  function renderHeader(x) {
    $("exp-name").textContent = x.name;
    const status = $("exp-status");
    status.textContent = x.status + (x.promoted_arm ? " · promoted " + x.promoted_arm : "");
    status.className = "status status-" + String(x.status).replace(/[^a-z_]/g, "");
    $("exp-key").textContent =
      x.key + " · version " + x.version + " · policy " + x.definition.policy.kind + " · traffic " +
      pct(x.definition.traffic, 0) + " · created " + utc(x.created_at) + " UTC";
    $("exp-description").textContent = x.definition.description || "";
  }

  function renderActions(x) {
    const box = $("actions");
    show("readonly-note", !isAdmin());
    if (!isAdmin()) {
      box.replaceChildren(); // a read key gets no controls at all
      return;
    }
    const buttons = ACTIONS.map((a) => {
      const allowed = a.from ? a.from.includes(x.status) : !!x.promoted_arm || x.version > 1;
      const b = el("button", {
        text: a.label,
        className: a.danger ? "danger" : "",
        attrs: { type: "button", "data-action": a.action },
        title: allowed ? a.text : "not possible while " + x.status,
      });
      b.disabled = !allowed;
      b.addEventListener("click", () => openConfirm(a));
      return b;
    });
    box.replaceChildren(...buttons);
  }

  function renderDecision(x, r, err) {
    const missing = $("missing");
    const reasons = $("reasons");
    const srm = $("srm");
    const gbody = $("guardrails").tBodies[0];
    if (!r) {
      $("decision-state").textContent = err ? "error" : "no analysis yet";
      $("decision-state").className = "badge decision-none";
      $("decision-action").textContent = "";
      missing.replaceChildren(
        el("li", { text: err ? err.message : "The analyzer has not looked at this experiment yet (it runs every analyzer_interval)." }),
      );
      reasons.replaceChildren();
      show("reasons-title", false);
      srm.textContent = "not computed";
      srm.className = "badge";
      $("srm-detail").textContent = "";
      gbody.replaceChildren();
      return;
    }
    const d = r.analysis.decision;
    $("decision-state").textContent = decisionLabel(d.state);
    $("decision-state").className = "badge decision-" + d.state.kind;
    $("decision-action").textContent =
      "recommended: " + words(d.action.kind) + (d.action.arm ? " " + d.action.arm : "") +
      " · look " + r.analysis.look + " at " + utc(r.analyzed_at) + " UTC";
    const miss = d.missing.length ? d.missing : ["nothing: every condition for a decision holds"];
    const items = miss.map((m) => el("li", { text: m }));
    if (d.needed) {
      items.push(el("li", {
        text: "about " + d.needed.additional_per_arm.toLocaleString("en-US") + " more mature exposures per arm (" +
          words(d.needed.basis) + ", " + d.needed.total_per_arm.toLocaleString("en-US") + " in all, for " + d.needed.arm + ")",
      }));
    }
    missing.replaceChildren(...items);
    reasons.replaceChildren(...d.reasons.map((m) => el("li", { text: m })));
    show("reasons-title", d.reasons.length > 0);
    const s = r.analysis.srm;
    if (s.flagged) {
      srm.textContent = "mismatch";
      srm.className = "badge bad";
    } else if (s.p_value) {
      srm.textContent = "ok";
      srm.className = "badge good";
    } else {
      srm.textContent = "not computed";
      srm.className = "badge";
    }
    const arms = primaryMetric(r) ? primaryMetric(r).arms.map((a) => a.arm) : [];
    const counts = s.observed.map((o, i) => (arms[i] || "arm " + i) + " " + o + " vs " + num(s.expected[i], 1)).join(", ");
    $("srm-detail").textContent =
      (s.p_value ? "p = " + pval(s.p_value) + " (flagged below " + s.threshold + "); " : "") +
      (counts ? "observed vs expected: " + counts : "") + (s.reason ? " · " + s.reason : "");
    const grows = r.analysis.guardrails.map((g) => {
      const cls = g.status === "breached" ? "bad" : g.status === "ok" ? "good" : "";
      return el("tr", {}, [
        td(g.metric),
        td(g.arm),
        el("td", {}, [el("span", { className: "badge " + cls, text: g.status })]),
        td(pct(g.relative_uplift, 1, true), "num"),
        td(interval(g.always_valid_interval, true), "iv", g.reason || ""),
      ]);
    });
    if (!grows.length) grows.push(el("tr", {}, [el("td", { text: "no guardrails", attrs: { colspan: "5" }, className: "muted" })]));
    gbody.replaceChildren(...grows);
  }

  function renderArms(x, r) {
    const select = $("metric");
    const metrics = (r && r.analysis.metrics) || [];
    const names = metrics.map((m) => m.metric);
    const chosen = names.includes(select.value) ? select.value : (primaryMetric(r) || {}).metric;
    if (select.options.length !== names.length || names.some((n, i) => select.options[i].value !== n)) {
      select.replaceChildren(...metrics.map((m) => el("option", { text: m.metric + " (" + m.role + ")", attrs: { value: m.metric } })));
    }
    if (chosen) select.value = chosen;
    show("metric", metrics.length > 1);
    const m = metrics.find((mm) => mm.metric === chosen);
    const pmf = x.pmf || {};
    let rows;
    if (!m) {
      rows = x.definition.arms.map((a) =>
        el("tr", {}, [
          td(a.key + (a.control ? " (control)" : "")),
          ...Array.from({ length: 8 }, () => td(DASH, "num")),
          td(pct(pmf[a.key], 1), "num"),
        ]),
      );
      $("arms-note").textContent = "No analysis yet: numbers appear after the analyzer's first look.";
    } else {
      const conv = m.kind === "conversion";
      rows = m.arms.map((a) => {
        const up = a.uplift_relative;
        return el("tr", { attrs: { "data-arm": a.arm } }, [
          el("td", {}, [a.arm, a.is_control ? el("span", { className: "muted small", text: " control" }) : null]),
          td(a.exposures_mature.toLocaleString("en-US"), "num", a.exposures_immature + " more not yet mature"),
          td(a.conversions === null || a.conversions === undefined ? DASH : a.conversions.toLocaleString("en-US"), "num"),
          td(conv ? pct(a.mean, 2) : num(a.mean, 3), "num", a.mean_reason || ""),
          td(up ? pct(up.point, 1, true) : DASH, "num", up && up.reason ? up.reason : ""),
          td(up ? interval(up.always_valid_interval, true) : DASH, "iv"),
          td(up ? interval(up.fixed_horizon_interval, true) : DASH, "iv"),
          td(a.is_control ? DASH : pval(a.p_always_valid) + " / " + pval(a.p_holm_adjusted), "num", a.p_reason || ""),
          td(pct(a.prob_best, 1), "num", a.bayes_reason || ""),
          td(pct(pmf[a.arm], 1), "num"),
        ]);
      });
      $("arms-note").textContent =
        "Estimator: " + m.estimator + (m.cuped_theta !== null && m.cuped_theta !== undefined ? " (θ = " + num(m.cuped_theta, 3) + ")" : "") +
        " · uplift is relative to control · decisions use the always-valid interval; the fixed-horizon one is shown for reference only.";
    }
    $("arms").tBodies[0].replaceChildren(...rows);
  }

  // The charts cover the experiment's life, at most its last 7 days and at least its last
  // 6 hours, up to now, or up to just after the newest analysis when that is stamped later
  // than this browser's clock (clocks that disagree must not hide the newest look).
  function chartRange(x, r) {
    const HOUR = 3600000;
    const at = r && parseTime(r.analyzed_at);
    const to = Math.max(Date.now(), at ? at.getTime() + 60000 : 0);
    const created = parseTime(x && x.created_at);
    const from = Math.min(to - 6 * HOUR, Math.max(created ? created.getTime() : 0, to - 7 * 24 * HOUR));
    return "?from=" + enc(new Date(from).toISOString()) + "&to=" + enc(new Date(to).toISOString());
  }

  // Turns SVG text from the server into a DOM node with nothing active in it.
  function svgNode(text) {
    const doc = new DOMParser().parseFromString(text, "image/svg+xml");
    const root = doc.documentElement;
    if (!root || root.namespaceURI !== SVG_NS || root.localName !== "svg" || doc.getElementsByTagName("parsererror").length) {
      return null;
    }
    for (const bad of Array.from(root.querySelectorAll("script, foreignObject, iframe, object, embed"))) bad.remove();
    for (const node of [root, ...root.querySelectorAll("*")]) {
      for (const attr of Array.from(node.attributes)) {
        const name = attr.name.toLowerCase();
        const value = attr.value.trim().toLowerCase();
        if (name.startsWith("on") || ((name === "href" || name.endsWith(":href")) && !value.startsWith("#"))) {
          node.removeAttribute(attr.name);
        }
      }
    }
    if (!root.hasAttribute("viewBox")) {
      const w = parseFloat(root.getAttribute("width"));
      const h = parseFloat(root.getAttribute("height"));
      if (w > 0 && h > 0) root.setAttribute("viewBox", "0 0 " + w + " " + h);
    }
    root.removeAttribute("width");
    root.removeAttribute("height");
    return document.importNode(root, true);
  }

  function renderCharts(settled) {
    const box = $("charts");
    if (settled.status === "rejected") {
      const e = settled.reason;
      // An older server answers the charts path with the router's 404 or 405.
      const missingEndpoint = e.code === "route_not_found" || e.code === "method_not_allowed";
      const why = missingEndpoint
        ? "Charts unavailable: this server has no charts endpoint (" + e.message + ")."
        : "Charts unavailable: " + e.message;
      setError("charts-error", why);
      if (e.code !== "network_error") {
        box.replaceChildren();
        chartCache = new Map();
      }
      return;
    }
    setError("charts-error", "");
    const charts = (settled.value && settled.value.charts) || [];
    const seen = new Set();
    for (const c of charts) {
      const name = String(c.name);
      seen.add(name);
      if (chartCache.get(name) === c.svg) continue;
      const node = svgNode(String(c.svg));
      const body = node || el("p", { className: "error", text: "this chart could not be read" });
      let fig = box.querySelector('figure[data-chart="' + CSS.escape(name) + '"]');
      if (!fig) {
        fig = el("figure", { className: "chart", attrs: { "data-chart": name } });
        box.append(fig);
      }
      // The SVG draws its own title; the figure carries it for assistive technology.
      fig.setAttribute("aria-label", String(c.title || name));
      fig.replaceChildren(body);
      chartCache.set(name, c.svg);
    }
    for (const fig of Array.from(box.querySelectorAll("figure[data-chart]"))) {
      if (!seen.has(fig.getAttribute("data-chart"))) {
        chartCache.delete(fig.getAttribute("data-chart"));
        fig.remove();
      }
    }
    if (!charts.length) setError("charts-error", "No charts yet: they appear once the experiment has data.");
  }

  function renderAudit(entries) {
    const rows = entries
      .slice()
      .reverse()
      .map((d) =>
        el("tr", { attrs: { "data-action": d.action } }, [td(utc(d.created_at)), td(words(d.action)), td(d.actor), td(d.reason || DASH, "reason")]),
      );
    if (!rows.length) rows.push(el("tr", {}, [el("td", { text: "nothing yet", attrs: { colspan: "4" }, className: "muted" })]));
    $("audit").tBodies[0].replaceChildren(...rows);
  }

  // ---------------------------------------------------------------- admin actions

  let pending = null;

  function openConfirm(a) {
    if (!current || !isAdmin()) return;
    pending = a;
    $("confirm-title").textContent = a.label.replace("…", "") + " “" + current.name + "”?";
    $("confirm-text").textContent = a.text;
    $("confirm-reason").value = "";
    setError("confirm-error", "");
    const promote = a.action === "promote";
    show("promote-fields", promote);
    if (promote) {
      const best = lastResult && lastResult.analysis.decision.checks.best_arm;
      const arms = current.definition.arms.filter((x) => !x.control);
      $("confirm-winner").replaceChildren(...arms.map((x) => el("option", { text: x.key, attrs: { value: x.key } })));
      if (best && arms.some((x) => x.key === best)) $("confirm-winner").value = best;
      $("confirm-holdout").value = "";
    }
    $("confirm-ok").disabled = false;
    $("confirm").showModal();
    $("confirm-reason").focus();
  }

  async function submitConfirm(ev) {
    ev.preventDefault();
    if (!pending || !current) return;
    const reason = $("confirm-reason").value.trim();
    if (!reason) {
      setError("confirm-error", "Say why: the reason goes to the audit log.");
      return;
    }
    const body = { reason: reason };
    if (pending.action === "promote") {
      body.winner = $("confirm-winner").value;
      const h = $("confirm-holdout").value.trim();
      if (h !== "") body.holdout = Number(h);
    }
    const a = pending;
    const key = current.key;
    $("confirm-ok").disabled = true;
    try {
      await api("POST", "/v1/experiments/" + enc(key) + "/" + a.action, body);
    } catch (e) {
      $("confirm-ok").disabled = false;
      setError("confirm-error", e.message + " (" + e.code + ")");
      return;
    }
    $("confirm").close();
    pending = null;
    flash(a.label.replace("…", "") + " done for " + key + ": " + reason);
    await refresh();
  }

  // ---------------------------------------------------------------- start

  function init() {
    $("login-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const key = $("api-key").value.trim();
      if (!key) return;
      $("login-submit").disabled = true;
      try {
        if (await signIn(key)) await navigate();
      } finally {
        $("login-submit").disabled = false;
      }
    });
    $("logout").addEventListener("click", () => signOut(""));
    $("confirm-form").addEventListener("submit", submitConfirm);
    $("confirm-reason").addEventListener("input", () => setError("confirm-error", ""));
    $("confirm-cancel").addEventListener("click", () => {
      pending = null;
      $("confirm").close();
    });
    $("metric").addEventListener("change", () => current && renderArms(current, lastResult));
    window.addEventListener("hashchange", navigate);
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) stopRefresh();
      else if (me) {
        refresh();
        startRefresh();
      }
    });
    const key = apiKey();
    if (key) {
      signIn(key).then((ok) => ok && navigate());
    } else {
      signOut("");
    }
  }

  init();
})();
