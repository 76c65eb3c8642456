/* The live page: follows /events (Server-Sent Events) and keeps the alerts, the station
   tiles and the latest records current without reloading. Plain JavaScript, no framework.

   window.__shown[record_id] is the time (ms since the epoch, performance.timeOrigin +
   performance.now()) at which the page first put an alert about that record on screen,
   so that a test can measure the time from a reading to the supervisor's screen. */
"use strict";

(function () {
  const body = document.body;
  if (!body.classList.contains("live-page")) return;

  window.__shown = window.__shown || {};
  const mayAck = body.dataset.mayAck === "1";
  const zone = body.dataset.timezone || undefined;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  const alertList = document.getElementById("alerts");
  const noAlerts = document.getElementById("no-alerts");
  const stationBox = document.getElementById("stations");
  const noStations = document.getElementById("no-stations");
  const recordBox = document.getElementById("records");
  const conn = document.getElementById("conn");

  const alerts = new Map(); // key -> {data, el}
  const stations = new Map(); // station key -> {data, tile, block}
  let streamUp = false;
  let brokerUp = false;
  let source = null;

  const KINDS = {
    out_of_tolerance: "Out of tolerance",
    trend: "Trend (SPC)",
    calibration: "Calibration due",
    refused: "Reading refused",
  };

  function fmt(options) {
    try {
      return new Intl.DateTimeFormat(undefined, Object.assign({ hour12: false, timeZone: zone }, options));
    } catch (e) {
      return new Intl.DateTimeFormat(undefined, Object.assign({ hour12: false }, options));
    }
  }
  const timeFmt = fmt({ hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const dayFmt = fmt({ year: "numeric", month: "2-digit", day: "2-digit" });

  function parseAt(text) {
    if (!text) return NaN;
    return Date.parse(String(text).replace(/(\.\d{3})\d*Z$/, "$1Z"));
  }
  function clockText(text) {
    const t = parseAt(text);
    if (isNaN(t)) return "—";
    const day = dayFmt.format(t);
    const today = dayFmt.format(Date.now());
    return (day === today ? "" : day + " ") + timeFmt.format(t);
  }
  function ago(text) {
    const t = parseAt(text);
    if (isNaN(t)) return "";
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min ago";
    return Math.floor(s / 86400) + " d ago";
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function show(x) {
    return x === undefined || x === null || x === "" ? "—" : String(x);
  }

  /* -- connection indicator ------------------------------------------------------------- */
  function updateConn() {
    if (streamUp && brokerUp) {
      conn.className = "conn live";
      conn.textContent = "LIVE";
    } else if (streamUp) {
      conn.className = "conn down";
      conn.textContent = "BROKER UNREACHABLE";
    } else {
      conn.className = "conn wait";
      conn.textContent = "RECONNECTING";
    }
  }

  /* -- alerts --------------------------------------------------------------------------------- */
  function order(a) {
    return [parseAt(a.at) || 0, Number(a.seq) || 0];
  }
  function newer(a, b) {
    const x = order(a), y = order(b);
    return x[0] !== y[0] ? x[0] > y[0] : x[1] > y[1];
  }

  function fact(label, value, cls) {
    const f = el("div", "fact" + (cls ? " " + cls : ""));
    f.appendChild(el("span", "label", label));
    const v = el("span", "v");
    if (value instanceof Node) v.appendChild(value);
    else v.textContent = show(value);
    f.appendChild(v);
    return f;
  }

  function limitsNode(a) {
    const span = el("span", "limits");
    const lsl = el("span", a.limit === "lower" ? "breach" : "", show(a.lsl));
    const usl = el("span", a.limit === "upper" ? "breach" : "", show(a.usl));
    span.append(lsl, document.createTextNode(" … "), usl);
    return span;
  }

  function buildAlert(a) {
    const state = a.state || "opened";
    const li = el("li", "alert sev-" + (a.severity || "warning") + " kind-" + (a.kind || "") + " state-" + state);
    li.dataset.key = a.key;
    li.dataset.recordId = a.record_id;
    li.dataset.episode = a.episode || a.record_id;
    li.dataset.state = state;
    li.dataset.kind = a.kind || "";
    li.dataset.station = a.station_key || "";
    li.dataset.points = String(a.points || 1);
    li.appendChild(el("div", "alert-bar"));
    const main = el("div", "alert-main");
    li.appendChild(main);

    const top = el("div", "alert-top");
    top.appendChild(el("span", "sev", String(a.severity || "warning").toUpperCase()));
    top.appendChild(el("span", "kind", KINDS[a.kind] || a.kind));
    top.appendChild(el("span", "where", a.station));
    top.appendChild(el("span", "episode-state", state === "closed" ? "EPISODE CLOSED" : "EPISODE OPEN"));
    if ((a.points || 1) > 1) top.appendChild(el("span", "points", (a.points || 1) + " values"));
    if (a.retained) top.appendChild(el("span", "earlier", "raised before this screen started"));
    const when = el("span", "alert-time");
    const time = el("time", "", clockText(a.at));
    time.dateTime = a.at || "";
    when.append(time, document.createTextNode(" · "));
    const agoEl = el("span", "ago", ago(a.at));
    agoEl.dataset.at = a.at || "";
    when.appendChild(agoEl);
    top.appendChild(when);
    main.appendChild(top);

    const facts = el("div", "facts");
    facts.appendChild(fact("Serial", a.serial, "serial"));
    facts.appendChild(fact("Characteristic", a.characteristic, "characteristic"));
    if (a.judged_value !== null && a.judged_value !== undefined) {
      facts.appendChild(fact("Value", a.judged_value + (a.unit ? " " + a.unit : ""), "value"));
    }
    if (a.lsl !== null || a.usl !== null) {
      facts.appendChild(fact("Limits" + (a.unit ? " (" + a.unit + ")" : ""), limitsNode(a)));
    }
    if (a.limit) facts.appendChild(fact("Beyond", a.limit === "upper" ? "▲ upper limit" : "▼ lower limit"));
    if (a.rules && a.rules.length) facts.appendChild(fact("SPC rules", a.rules.join(", ")));
    if (a.baseline_short) facts.appendChild(fact("Limits", "provisional: from " + a.baseline_n + " values", "baseline-short"));
    if (a.characteristic && a.station_key && (a.kind === "trend" || a.kind === "out_of_tolerance")) {
      const link = el("a", "chart-link", "chart");
      link.href = "/chart?" + new URLSearchParams({ station: a.station_key, characteristic: a.characteristic });
      facts.appendChild(fact("See", link));
    }
    facts.appendChild(fact("Part number", a.part_number));
    main.appendChild(facts);
    if (a.message) main.appendChild(el("div", "alert-msg", a.message));

    const area = el("div", "ack-area");
    main.appendChild(area);
    renderAck(li, area, a);
    return li;
  }

  function renderAck(li, area, a) {
    area.textContent = "";
    if (a.ack) {
      li.classList.add("acked");
      const note = el("div", "acked-note");
      note.append(document.createTextNode("✓ acknowledged by " + show(a.ack.by)));
      if (a.ack.cause) {
        note.append(document.createTextNode(" · cause: "));
        note.appendChild(el("span", "cause", a.ack.cause));
        note.append(document.createTextNode(" · action: "));
        note.appendChild(el("span", "action", a.ack.action));
      }
      if (a.ack.comment) {
        note.append(document.createTextNode(": "));
        note.appendChild(el("span", "comment", a.ack.comment));
      }
      if (a.ack.at) note.append(el("span", "ack-time", " · " + clockText(a.ack.at)));
      area.appendChild(note);
      return;
    }
    li.classList.remove("acked");
    if (!mayAck) {
      area.appendChild(el("div", "unacked-note", "Awaiting acknowledgement by a supervisor"));
      return;
    }
    const form = el("form", "ack-form");
    const plan = a.reaction_plan;
    const choices = [];
    if (plan && (a.kind === "out_of_tolerance" || a.kind === "trend")) {
      for (const [name, label, options] of [["cause", "Cause", plan.causes], ["action", "Action", plan.actions]]) {
        const select = el("select", "ack-" + name);
        select.name = name;
        select.setAttribute("aria-required", "true"); // checked on submit, with a message
        select.setAttribute("aria-label", label + " from the reaction plan");
        const empty = el("option", "", label + "…");
        empty.value = "";
        select.appendChild(empty);
        for (const o of options || []) {
          const opt = el("option", "", o);
          opt.value = o;
          select.appendChild(opt);
        }
        choices.push(select);
        form.appendChild(select);
      }
    }
    const input = el("input", "ack-comment");
    input.name = "comment";
    input.maxLength = 500;
    input.placeholder = choices.length ? "Comment (optional)" : "Comment: cause, containment, action taken";
    input.setAttribute("aria-label", "comment for the acknowledgement");
    const button = el("button", "ack-button", "Acknowledge");
    button.type = "submit";
    const result = el("span", "ack-result");
    result.setAttribute("role", "status");
    form.append(input, button, result);
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      acknowledge(a.record_id, input, button, result, choices);
    });
    area.appendChild(form);
  }

  async function acknowledge(recordId, input, button, result, choices) {
    const payload = { comment: input.value };
    for (const select of choices || []) {
      if (!select.value) {
        result.className = "ack-result error";
        result.textContent = "choose the " + select.name + " from the reaction plan";
        return;
      }
      payload[select.name] = select.value;
    }
    button.disabled = true;
    input.disabled = true;
    result.className = "ack-result";
    result.textContent = "Sending to the station…";
    let status = 0;
    let data = {};
    try {
      const resp = await fetch("/alerts/" + encodeURIComponent(recordId) + "/ack", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(payload),
      });
      status = resp.status;
      data = await resp.json().catch(function () { return {}; });
    } catch (e) {
      data = { error: "the dashboard is not reachable" };
    }
    if (status === 401) {
      location.href = "/login?expired=1";
      return;
    }
    if ((status === 200 && data.ok) || (status === 409 && data.ack)) {
      setAck(recordId, data.ack);
      return;
    }
    result.className = "ack-result error";
    result.textContent = data.error || "not acknowledged (HTTP " + status + ")";
    button.disabled = false;
    input.disabled = false;
  }

  function setAck(recordId, ack) {
    alerts.forEach(function (entry) {
      if (entry.data.record_id !== recordId) return;
      entry.data.ack = ack;
      renderAck(entry.el, entry.el.querySelector(".ack-area"), entry.data);
    });
    summarizeAlerts();
  }

  function addAlert(a, live) {
    const known = alerts.get(a.key);
    if (known) {
      const samePoint = (known.data.points || 1) === (a.points || 1) && known.data.state === a.state;
      if (samePoint) {
        if (JSON.stringify(known.data.ack) !== JSON.stringify(a.ack)) {
          known.data.ack = a.ack;
          renderAck(known.el, known.el.querySelector(".ack-area"), known.data);
        }
        return;
      }
      // a further value of the episode, or its end: the card is drawn again, on top
      if (!a.ack && known.data.ack) a.ack = known.data.ack;
      known.el.remove();
      alerts.delete(a.key);
    }
    const li = buildAlert(a);
    let before = null;
    for (const child of alertList.children) {
      const other = alerts.get(child.dataset.key);
      if (other && !newer(other.data, a)) {  // on a tie the later arrival goes on top
        before = child;
        break;
      }
    }
    alertList.insertBefore(li, before);
    alerts.set(a.key, { data: a, el: li });
    if (!(a.record_id in window.__shown)) {
      window.__shown[a.record_id] = performance.timeOrigin + performance.now();
    }
    if (live) {
      li.classList.add("fresh");
      setTimeout(function () { li.classList.remove("fresh"); }, 1700);
    }
    while (alertList.children.length > 300) {
      const last = alertList.lastElementChild;
      alerts.delete(last.dataset.key);
      last.remove();
    }
    summarizeAlerts();
  }

  /* -- filters -------------------------------------------------------------------------------------- */
  const filterStation = document.getElementById("filter-station");
  const filterKind = document.getElementById("filter-kind");
  const filterStatus = document.getElementById("filter-status");
  function passes(data) {
    if (filterStation.value && data.station_key !== filterStation.value) return false;
    if (filterKind.value && data.kind !== filterKind.value) return false;
    const status = filterStatus.value;
    if (status === "open" && data.ack) return false;
    if (status === "acked" && !data.ack) return false;
    if (status === "active" && data.state === "closed") return false;
    if (status === "closed" && data.state !== "closed") return false;
    return true;
  }
  function applyFilters() {
    const known = new Set(Array.from(filterStation.options).map(function (o) { return o.value; }));
    alerts.forEach(function (entry) {
      const key = entry.data.station_key;
      if (key && !known.has(key)) {
        const opt = el("option", "", entry.data.station || key);
        opt.value = key;
        filterStation.appendChild(opt);
        known.add(key);
      }
      entry.el.classList.toggle("filtered", !passes(entry.data));
    });
  }
  for (const f of [filterStation, filterKind, filterStatus]) f.addEventListener("change", applyFilters);

  function summarizeAlerts() {
    applyFilters();
    let open = 0, done = 0;
    alerts.forEach(function (entry) { if (entry.data.ack) done += 1; else open += 1; });
    noAlerts.classList.toggle("hidden", alerts.size > 0);
    document.getElementById("alert-summary").textContent =
      alerts.size ? open + " open · " + done + " acknowledged" : "";
  }

  /* -- stations --------------------------------------------------------------------------------- */
  function count(cls, n, label) {
    const d = el("div", cls + (n > 0 ? " nonzero" : ""));
    d.appendChild(el("span", "n", n));
    d.appendChild(el("span", "label", label));
    return d;
  }

  function renderTile(tile, s) {
    tile.className = "tile " + (s.state === "online" ? "online" : s.state === "offline" ? "offline" : "unknown");
    tile.textContent = "";
    const head = el("div", "tile-head");
    head.appendChild(el("span", "tile-name", s.station));
    head.appendChild(el("span", "state", String(s.state || "unknown").toUpperCase()));
    tile.appendChild(head);
    tile.appendChild(el("div", "tile-sub", [s.site, s.line, s.gateway ? "gateway " + s.gateway : null].filter(Boolean).join(" · ")));
    const counts = el("div", "tile-counts");
    const c = s.counts || {};
    counts.append(count("records", c.records || 0, "records"), count("fails", c.fails || 0, "fails"), count("alerts", c.alerts || 0, "alerts"));
    tile.appendChild(counts);
    let note = "";
    if (s.state === "offline") note = (s.reason ? s.reason + " · " : "") + (s.since ? "since " + clockText(s.since) : "");
    else if (s.since) note = s.state + " since " + clockText(s.since);
    tile.appendChild(el("div", "tile-note", note));
  }

  function renderRecords(block, s) {
    block.textContent = "";
    block.appendChild(el("h3", "", s.station + " · " + s.line));
    const rows = s.records || [];
    if (!rows.length) {
      block.appendChild(el("p", "empty", "No records yet."));
      return;
    }
    const table = el("table", "mini");
    const tbody = el("tbody");
    for (const r of rows) {
      const tr = el("tr", "k-" + r.kind);
      tr.dataset.id = r.id || "";
      tr.appendChild(el("td", "t", clockText(r.at)));
      tr.appendChild(el("td", "s", r.serial || ""));
      tr.appendChild(el("td", "x", r.text));
      const v = el("td", "v");
      if (r.verdict) v.appendChild(el("span", "verdict v-" + String(r.verdict).toLowerCase().replace(/[^a-z_]/g, ""), r.verdict));
      tr.appendChild(v);
      tbody.appendChild(tr);
    }
    table.appendChild(tbody);
    block.appendChild(table);
  }

  function updateStation(s) {
    let entry = stations.get(s.key);
    if (!entry) {
      const tile = el("div", "tile");
      tile.dataset.key = s.key;
      tile.dataset.station = s.station;
      const block = el("div", "station-records");
      block.dataset.key = s.key;
      entry = { data: s, tile: tile, block: block };
      stations.set(s.key, entry);
      const keys = Array.from(stations.keys()).sort();
      const i = keys.indexOf(s.key);
      const next = i + 1 < keys.length ? stations.get(keys[i + 1]) : null;
      stationBox.insertBefore(tile, next ? next.tile : null);
      recordBox.insertBefore(block, next ? next.block : null);
    }
    entry.data = s;
    renderTile(entry.tile, s);
    renderRecords(entry.block, s);
    noStations.classList.toggle("hidden", stations.size > 0);
  }

  /* -- shift ------------------------------------------------------------------------------------ */
  function setShift(shift) {
    document.getElementById("shift-label").textContent = shift.label + (shift.timezone ? " " + shift.timezone : "");
    const note = document.getElementById("shift-note");
    const since = parseAt(shift.counting_since), start = parseAt(shift.start);
    note.textContent = since > start + 1000 ? "counting since " + clockText(shift.counting_since) : "";
  }

  /* -- the stream -------------------------------------------------------------------------------- */
  function applySnapshot(snap) {
    setShift(snap.shift);
    brokerUp = !!snap.broker;
    const keep = new Set(snap.alerts.map(function (a) { return a.key; }));
    alerts.forEach(function (entry, key) {
      if (!keep.has(key)) {
        entry.el.remove();
        alerts.delete(key);
      }
    });
    for (let i = snap.alerts.length - 1; i >= 0; i--) addAlert(snap.alerts[i], false);
    for (const s of snap.stations) updateStation(s);
    summarizeAlerts();
  }

  function on(name, handler) {
    source.addEventListener(name, function (ev) {
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      handler(data);
    });
  }

  async function checkSession() {
    try {
      const resp = await fetch("/api/me", { credentials: "same-origin", cache: "no-store" });
      if (resp.status === 401) {
        location.href = "/login?expired=1";
        return false;
      }
      return resp.ok;
    } catch (e) {
      return false;
    }
  }

  function connect() {
    source = new EventSource("/events");
    on("snapshot", function (snap) {
      applySnapshot(snap);
      streamUp = true;
      updateConn();
      body.dataset.live = "1";
    });
    on("alert", function (a) { addAlert(a, true); });
    on("ack", function (d) { setAck(d.record_id, d.ack); });
    on("stations", function (list) { list.forEach(updateStation); });
    on("shift", setShift);
    on("broker", function (d) {
      brokerUp = !!d.connected;
      updateConn();
    });
    on("expired", function (d) {
      source.close();
      location.href = d.login || "/login?expired=1";
    });
    source.onerror = function () {
      streamUp = false;
      updateConn();
      delete body.dataset.live;
      checkSession().then(function () {
        if (source.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
      });
    };
  }

  function tick() {
    document.getElementById("clock").textContent = timeFmt.format(Date.now());
    for (const span of document.querySelectorAll(".ago")) span.textContent = ago(span.dataset.at);
  }

  updateConn();
  tick();
  setInterval(tick, 1000);
  connect();
})();
