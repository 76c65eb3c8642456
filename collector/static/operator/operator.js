// The inspector's screen: reads the station's view, follows it live (Server-Sent Events),
// and sends what the operator scans or clicks. Plain JavaScript, no build step, no CDN.
//
// Keyboard-wedge scanners type the code and press Enter into whatever has focus: the scan
// field therefore keeps the focus (it takes it back after a click elsewhere), except while
// a dialog is open.
"use strict";

(function () {
  const body = document.body;
  const station = body.dataset.station;
  // with a user register, people sign in with badge and PIN, and these commands need the PIN again
  const register = body.dataset.register === "yes";
  const signed = new Set((body.dataset.signed || "").split(" ").filter((x) => x));
  const base = "/station/" + encodeURIComponent(station);
  const $ = (id) => document.getElementById(id);
  const scan = $("scan");

  let view = null; // the last view rendered
  let source = null; // the EventSource
  let reconnectTimer = null;
  let queue = Promise.resolve(); // commands go to the gateway one at a time, in order
  let stickyUntil = 0; // a refused scan stays in the banner a while, over mere news
  let askedFor = null; // the badge whose PIN the sign-in dialog asked for last
  const specs = {}; // characteristic -> {lsl, usl, nominal, unit, name}, as the views showed them

  const REASONS = { first_piece: "First piece", patrol: "Patrol", ongoing: "Ongoing" };

  // -- banner -------------------------------------------------------------------------------------
  const LABELS = { error: "REFUSED", warn: "ATTENTION", ok: "OK", info: "INFO" };

  function banner(kind, message, label) {
    const el = $("banner");
    el.className = "banner " + kind;
    $("banner-kind").textContent = label === undefined ? LABELS[kind] || "" : label;
    $("banner-text").textContent = message;
    void el.offsetWidth; // restart the flash animation
    if (kind === "error" || kind === "warn") el.classList.add("flash");
  }

  // what the gateway says happened: "part HX000123 reject", "D1 12.003 pass", "operator op-42 signed in" ...
  function announce(message) {
    const verdict = /^part\b.*\b(accept|reject|incomplete)$/.exec(message);
    if (verdict) {
      banner({ accept: "ok", reject: "error", incomplete: "warn" }[verdict[1]], message, "PART");
      return;
    }
    const value = /^\S+ \S+ (pass|fail)$/.exec(message);
    if (value) {
      banner(value[1] === "pass" ? "ok" : "error", message, value[1] === "pass" ? "PASS" : "FAIL");
      return;
    }
    banner("info", message);
  }

  function idleHint(v) {
    if (!v.operator) return register ? "Scan your badge (or press Sign in), then enter your PIN" : "Scan your badge to sign in";
    if (v.awaiting_label) return "Scan the part label";
    return "Measure " + v.next.characteristic + " " + (v.next.name || "");
  }

  // -- rendering ----------------------------------------------------------------------------------
  function setText(id, value, fallback) {
    const text = value === null || value === undefined || value === "" ? (fallback ?? "—") : String(value);
    $(id).textContent = text;
    return text;
  }

  function plural(list) {
    return (list || []).join(", ");
  }

  function render(v) {
    const previous = view;
    view = v;
    const fresh = !previous || previous.version !== v.version;

    // operator
    const op = $("operator");
    op.textContent = v.operator ? v.operator + (v.operator_name ? " · " + v.operator_name : "") : "sign in: scan your badge";
    op.classList.toggle("missing", !v.operator);
    $("btn-signout").disabled = !v.operator;
    $("btn-signin").classList.toggle("hidden", !register || !!v.operator);
    $("btn-release").classList.toggle("hidden", !v.awaiting_release);
    // a badge scanned at the station (here or on its scanner) waits for the PIN
    if (v.pending_sign_in && v.pending_sign_in !== askedFor && !dialogOpen()) {
      askedFor = v.pending_sign_in;
      openSignIn(v.pending_sign_in, "");
    } else if (!v.pending_sign_in) {
      askedFor = null;
    }

    // part context
    setText("part-number", v.part_number);
    setText("plan-revision", v.plan_revision);
    const serial = $("serial");
    serial.textContent = v.serial || (v.awaiting_label ? "scan the part label" : "—");
    serial.classList.toggle("awaiting", !!v.awaiting_label);
    setText("lot", v.lot);
    setText("work-order", v.work_order);
    const reason = $("reason");
    reason.textContent = REASONS[v.reason_for_test] || v.reason_for_test || "—";
    reason.classList.toggle("special", !!v.reason_for_test && v.reason_for_test !== "ongoing");
    $("nc-field").classList.toggle("hidden", !v.open_nonconformances);
    setText("nc", v.open_nonconformances, "0");

    // next characteristic
    const next = v.next || {};
    if (next.characteristic) {
      specs[next.characteristic] = {
        lsl: next.lsl, usl: next.usl, nominal: next.nominal, unit: next.unit, name: next.name,
      };
    }
    setText("next-id", next.characteristic);
    setText("next-name", next.name, "");
    let range = "—";
    if (next.lsl && next.usl) range = next.lsl + " … " + next.usl;
    else if (next.usl) range = "≤ " + next.usl;
    else if (next.lsl) range = "≥ " + next.lsl;
    $("next-range").textContent = range;
    setText("next-unit", next.unit, "");
    setText("next-nominal", next.nominal);
    $("remeasure-flag").classList.toggle("hidden", !next.remeasure);
    const nextCard = $("next-card");
    nextCard.classList.toggle("remeasure", !!next.remeasure);
    nextCard.classList.toggle("waiting", !!v.awaiting_label && !next.remeasure);
    $("waiting-note").textContent = v.operator ? "Scan the part label" : "Scan your badge, then the part label";

    // last value
    renderLast(v);
    renderChart(v);

    // plan tiles
    renderPlan(v);

    // part verdict
    renderVerdict(v.part_verdict);
    fitAll();

    // banner: what just happened (a refusal wins over a message)
    if (fresh) {
      if (v.refused) banner("warn", v.refused);
      else if (v.message && Date.now() >= stickyUntil) announce(v.message);
      else if (!previous || $("banner").classList.contains("neutral")) banner("neutral", idleHint(v));
    }
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  function nameOf(v, cid) {
    const entry = (v.plan || []).find((c) => c.characteristic === cid);
    return entry ? entry.name : (specs[cid] && specs[cid].name) || "";
  }

  function renderLast(v) {
    const last = v.last;
    const card = $("last-card");
    card.classList.remove("pass", "fail", "none");
    if (!last) {
      card.classList.add("none");
      setText("last-value", null, "no value yet");
      setText("last-unit", null, "");
      setText("last-char", null, "");
      setText("last-verdict", null, "");
      return;
    }
    const verdict = last.verdict === "fail" ? "fail" : last.verdict === "pass" ? "pass" : "none";
    card.classList.add(verdict);
    card.dataset.verdict = verdict;
    setText("last-value", last.judged_value);
    setText("last-unit", last.unit, "");
    setText("last-char", last.characteristic + " " + nameOf(v, last.characteristic), "");
    const spec = Object.assign({}, specs[last.characteristic] || {}, pick(last, ["lsl", "usl"]));
    let text;
    if (verdict === "fail") {
      if (last.limit === "upper") {
        text = "FAIL · above upper limit" + (spec.usl ? " " + spec.usl : "");
      } else if (last.limit === "lower") {
        text = "FAIL · below lower limit" + (spec.lsl ? " " + spec.lsl : "");
      } else {
        text = "FAIL" + (last.limit ? " · " + last.limit + " limit" : "");
      }
    } else if (verdict === "pass") {
      text = "PASS" + (spec.lsl || spec.usl ? " · within " + (spec.lsl || "") + " … " + (spec.usl || "") : "");
    } else {
      text = String(last.verdict || "").toUpperCase();
    }
    $("last-verdict").textContent = text;
  }

  // the trend of the next characteristic, drawn by the gateway (only where the card is shown)
  function renderChart(v) {
    const cid = v.next && v.next.characteristic;
    const card = $("chart-card");
    if (!cid || getComputedStyle(card).display === "none") return;
    $("chart-char").textContent = cid + " " + (v.next.name || "");
    const src = base + "/chart.svg?characteristic=" + encodeURIComponent(cid) + "&v=" + encodeURIComponent(v.version);
    const img = $("chart");
    if (img.getAttribute("src") !== src) img.setAttribute("src", src);
  }

  // the big numbers shrink to fit their card rather than overflow it
  function fit(el) {
    el.style.fontSize = "";
    const box = el.parentElement;
    const style = getComputedStyle(box);
    const room = box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    if (room > 0 && el.scrollWidth > room) {
      const size = parseFloat(getComputedStyle(el).fontSize);
      el.style.fontSize = Math.floor((size * room * 0.96) / el.scrollWidth) + "px";
    }
  }

  function fitAll() {
    document.querySelectorAll(".fit").forEach(fit);
  }

  function pick(obj, keys) {
    const out = {};
    for (const k of keys) if (obj[k] !== undefined && obj[k] !== null) out[k] = obj[k];
    return out;
  }

  function renderPlan(v) {
    const plan = $("plan");
    const tiles = [];
    const nextId = v.next && !v.awaiting_label ? v.next.characteristic : null;
    for (const c of v.plan || []) {
      const tile = document.createElement("div");
      const verdict = c.verdict === "pass" || c.verdict === "fail" ? c.verdict : "none";
      tile.className = "tile " + verdict + (c.characteristic === nextId ? " next" : "");
      tile.dataset.characteristic = c.characteristic;
      tile.dataset.verdict = verdict;
      const id = document.createElement("div");
      id.className = "tile-id";
      id.textContent = c.characteristic;
      const name = document.createElement("div");
      name.className = "tile-name";
      name.textContent = c.name || "";
      const word = document.createElement("div");
      word.className = "tile-verdict";
      word.textContent = verdict === "none" ? (c.characteristic === nextId ? "NEXT" : "—") : verdict.toUpperCase();
      tile.append(id, name, word);
      tiles.push(tile);
    }
    plan.replaceChildren(...tiles);
    const current = plan.querySelector(".tile.next");
    if (current) current.scrollIntoView({ block: "nearest" });
  }

  function renderVerdict(pv) {
    const box = $("verdict");
    box.classList.remove("accept", "reject", "incomplete", "none");
    if (!pv || !pv.verdict) {
      box.classList.add("none");
      setText("verdict-word", null);
      $("verdict-detail").textContent = "no part finished yet";
      return;
    }
    const verdict = ["accept", "reject", "incomplete"].includes(pv.verdict) ? pv.verdict : "none";
    box.classList.add(verdict);
    box.dataset.verdict = verdict;
    $("verdict-word").textContent = String(pv.verdict).toUpperCase();
    const parts = [];
    if (pv.serial) parts.push("serial " + pv.serial);
    parts.push(pv.released_by ? "released by " + pv.released_by : "not released");
    if (pv.failed && pv.failed.length) parts.push("failed: " + plural(pv.failed));
    if (pv.missing && pv.missing.length) parts.push("missing: " + plural(pv.missing));
    $("verdict-detail").textContent = parts.join(" · ");
  }

  // -- live connection ----------------------------------------------------------------------------
  function connected(up) {
    const conn = $("conn");
    conn.textContent = up ? "connected" : "disconnected";
    conn.className = "conn " + (up ? "up" : "down");
    body.classList.toggle("stale", !up);
  }

  function connect() {
    if (reconnectTimer !== null) {
      clearTimeout(reconnectTimer);
      reconnectTimer = null;
    }
    if (source) source.close();
    source = new EventSource(base + "/events");
    source.onopen = () => connected(true);
    source.onmessage = (event) => {
      connected(true);
      try {
        render(JSON.parse(event.data));
      } catch (err) {
        console.error("bad view", err);
      }
    };
    source.onerror = () => {
      connected(false);
      // the browser retries by itself unless the server refused the stream outright
      if (source.readyState === EventSource.CLOSED && reconnectTimer === null) {
        reconnectTimer = setTimeout(connect, 5000);
      }
    };
  }

  function loadOnce() {
    fetch(base + "/view", { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : null))
      .then((v) => {
        if (v && !view) render(v);
      })
      .catch(() => {});
  }

  // -- commands -------------------------------------------------------------------------------------
  const DONE = {
    patrol: "patrol inspection requested",
    sign_out: "signed out",
    abandon: "part abandoned",
    remeasure: "re-measure requested",
  };

  function post(path, payload) {
    const run = () =>
      fetch(base + path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload),
        cache: "no-store",
      })
        .then((r) =>
          r
            .json()
            .catch(() => ({ ok: false, error: "the gateway answered " + r.status }))
            .then((answer) => ({ status: r.status, answer }))
        )
        .catch(() => ({ status: 0, answer: { ok: false, error: "the gateway cannot be reached" } }));
    const result = queue.then(run);
    queue = result.then(() => undefined);
    return result.then(({ status, answer }) => {
      answer.status = status;
      if (!answer.ok) {
        stickyUntil = Date.now() + 4000;
        banner("error", answer.error || "refused");
      } else {
        stickyUntil = 0;
        const done = answer.message || DONE[payload.command] || "";
        if (done) banner("ok", done);
      }
      return answer;
    });
  }

  // signer: {user, secret} for the commands that carry a signature (never kept: the fields are cleared)
  function command(name, args, signer) {
    const clean = {};
    for (const [k, v] of Object.entries(args || {})) if (v !== null && v !== undefined && v !== "") clean[k] = v;
    const payload = { command: name, args: clean };
    if (signer) payload.signer = signer;
    return post("/command", payload).then((answer) => {
      // the sign-in has ended (idle, or someone else signed in): ask for it again
      if (answer.status === 401 && name !== "sign_in" && !signer && register) openSignIn(operator() || "", answer.error);
      return answer;
    });
  }

  function operator() {
    return view && view.operator ? view.operator : null;
  }

  // -- signatures ---------------------------------------------------------------------------------------
  // a dialog's "Signed by" and "PIN or password" fields, shown where the command needs them
  function prepareSignature(prefix, name) {
    const needed = register && signed.has(name);
    $(prefix + "-signature").classList.toggle("hidden", !needed);
    $(prefix + "-signer").value = operator() || "";
    $(prefix + "-secret").value = "";
    return needed;
  }

  function readSignature(prefix, name) {
    if (!(register && signed.has(name))) return { signer: null };
    const user = $(prefix + "-signer").value.trim();
    const secret = $(prefix + "-secret").value;
    $(prefix + "-secret").value = "";
    if (!user || !secret) return { error: "enter who signs and the PIN or password" };
    return { signer: { user, secret } };
  }

  function openSignIn(user, message) {
    $("signin-user").value = user || "";
    $("signin-secret").value = "";
    openDialog($("dlg-signin"));
    $("signin-error").textContent = message || "";
    (user ? $("signin-secret") : $("signin-user")).focus();
  }

  // -- the scan field keeps the focus -----------------------------------------------------------
  function dialogOpen() {
    return document.querySelector("dialog[open]") !== null;
  }

  // force: after a dialog closed. Chromium gives the focus back to the scan field, but keys
  // typed then do not reach it until it is focused again (seen with Debian's Chromium 156)
  function refocus(force) {
    if (dialogOpen()) return;
    if (force === true && document.activeElement === scan) scan.blur();
    if (document.activeElement !== scan) scan.focus({ preventScroll: true });
  }

  // scanners end a code with Enter or Tab (as configured in the scanner); an empty field's
  // Tab still moves the focus, for people using the keyboard
  scan.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== "Tab") return;
    const code = scan.value.trim();
    if (event.key === "Tab" && !code) return;
    event.preventDefault();
    scan.value = "";
    if (code) post("/scan", { code });
  });

  // A scan while a dialog is open: the scanner types into the dialog's focused field, where
  // it would be lost or, worse, taken as a comment or a PIN. A scanner types far faster than
  // a person (a few ms a key; people need 80 ms and more): a burst of at least SCAN_MIN keys,
  // each within SCAN_GAP ms of the last, ended by Enter or Tab, is a scan. It is taken out
  // of the field again and refused with a message in the dialog (the part in front of the
  // station does not change behind an open dialog); the operator closes it and scans again.
  const SCAN_GAP = 30;
  const SCAN_MIN = 6;
  let burst = null; // {field, before, keys, last}
  document.addEventListener(
    "keydown",
    (event) => {
      const dialog = document.querySelector("dialog[open]");
      if (!dialog) {
        burst = null;
        return;
      }
      const now = performance.now();
      const field = document.activeElement;
      if (event.key.length === 1 && !event.ctrlKey && !event.altKey && !event.metaKey) {
        if (!burst || now - burst.last > SCAN_GAP || burst.field !== field) {
          const before = field && "value" in field ? field.value : null;
          burst = { field, before, keys: 0, last: now };
        }
        burst.keys += 1;
        burst.last = now;
        return;
      }
      if ((event.key === "Enter" || event.key === "Tab") && burst && burst.keys >= SCAN_MIN && now - burst.last <= SCAN_GAP) {
        event.preventDefault();
        event.stopPropagation();
        if (burst.field && burst.before !== null && "value" in burst.field) burst.field.value = burst.before;
        const error = dialog.querySelector(".dlg-error");
        if (error) error.textContent = "scan not taken while this dialog is open: close it, then scan again";
      }
      burst = null;
    },
    true
  );
  scan.addEventListener("blur", () => setTimeout(refocus, 0));
  document.addEventListener("click", () => setTimeout(refocus, 0));
  window.addEventListener("focus", refocus);
  // a key typed while something else has the focus goes to the scan field
  document.addEventListener(
    "keydown",
    (event) => {
      if (dialogOpen() || document.activeElement === scan) return;
      if (event.ctrlKey || event.altKey || event.metaKey) return;
      if (event.key.length === 1 || event.key === "Enter") scan.focus({ preventScroll: true });
    },
    true
  );

  // -- dialogs ----------------------------------------------------------------------------------------
  function openDialog(dialog) {
    dialog.querySelectorAll(".dlg-error").forEach((e) => (e.textContent = ""));
    dialog.showModal();
  }

  function closeDialog(dialog) {
    dialog.querySelectorAll('input[type="password"]').forEach((e) => (e.value = ""));
    dialog.close();
    refocus(true);
  }

  document.querySelectorAll("dialog").forEach((dialog) => {
    dialog.addEventListener("close", () => setTimeout(() => refocus(true), 0));
    dialog.querySelectorAll("[data-close]").forEach((b) => b.addEventListener("click", () => closeDialog(dialog)));
  });

  function reasonText(select, input) {
    const code = select.value;
    const text = input.value.trim();
    if (!code) return { error: "choose a reason" };
    if (code === "other" && !text) return { error: "say what the reason is" };
    return { reason: text ? code + ": " + text : code };
  }

  $("btn-remeasure").addEventListener("click", () => {
    const select = $("remeasure-char");
    const measured = (view && view.plan ? view.plan : []).filter((c) => c.verdict);
    const last = view && view.last ? view.last.characteristic : null;
    const options = measured.map((c) => {
      const o = document.createElement("option");
      o.value = c.characteristic;
      o.textContent = c.characteristic + " " + (c.name || "") + (c.characteristic === last ? " (last measured)" : "");
      return o;
    });
    if (options.length === 0) {
      const o = document.createElement("option");
      o.value = "";
      o.textContent = "the last measured";
      options.push(o);
    }
    select.replaceChildren(...options);
    if (last && measured.some((c) => c.characteristic === last)) select.value = last;
    $("remeasure-reason").value = "";
    $("remeasure-text").value = "";
    prepareSignature("remeasure", "remeasure");
    openDialog($("dlg-remeasure"));
    $("remeasure-reason").focus();
  });

  $("form-remeasure").addEventListener("submit", (event) => {
    event.preventDefault();
    const r = reasonText($("remeasure-reason"), $("remeasure-text"));
    const s = readSignature("remeasure", "remeasure");
    if (r.error || s.error) {
      $("remeasure-error").textContent = r.error || s.error;
      return;
    }
    const dialog = $("dlg-remeasure");
    command("remeasure", { reason: r.reason, characteristic: $("remeasure-char").value }, s.signer).then((answer) => {
      if (answer.ok) closeDialog(dialog);
      else $("remeasure-error").textContent = answer.error || "refused";
    });
  });

  $("btn-abandon").addEventListener("click", () => {
    $("abandon-reason").value = "";
    $("abandon-text").value = "";
    prepareSignature("abandon", "abandon");
    openDialog($("dlg-abandon"));
    $("abandon-reason").focus();
  });

  $("form-abandon").addEventListener("submit", (event) => {
    event.preventDefault();
    const r = reasonText($("abandon-reason"), $("abandon-text"));
    const s = readSignature("abandon", "abandon");
    if (r.error || s.error) {
      $("abandon-error").textContent = r.error || s.error;
      return;
    }
    const dialog = $("dlg-abandon");
    command("abandon", { reason: r.reason }, s.signer).then((answer) => {
      if (answer.ok) closeDialog(dialog);
      else $("abandon-error").textContent = answer.error || "refused";
    });
  });

  $("btn-signin").addEventListener("click", () => openSignIn("", ""));

  // a dialog whose only content is a signature: the command goes out signed, or says what is missing
  function signedForm(prefix, name, userField, missing) {
    $("form-" + prefix).addEventListener("submit", (event) => {
      event.preventDefault();
      const user = $(userField).value.trim();
      const secret = $(prefix + "-secret").value;
      $(prefix + "-secret").value = "";
      if (!user || !secret) {
        $(prefix + "-error").textContent = missing;
        return;
      }
      const dialog = $("dlg-" + prefix);
      command(name, {}, { user, secret }).then((answer) => {
        if (answer.ok) closeDialog(dialog);
        else $(prefix + "-error").textContent = answer.error || "refused";
      });
    });
  }

  signedForm("signin", "sign_in", "signin-user", "enter your badge or user id and your PIN or password");

  $("btn-release").addEventListener("click", () => {
    const pv = view && view.part_verdict ? view.part_verdict : {};
    $("release-serial").textContent = pv.serial || "";
    $("release-signer").value = operator() || "";
    $("release-secret").value = "";
    openDialog($("dlg-release"));
    $("release-secret").focus();
  });

  signedForm("release", "release", "release-signer", "enter who signs and the PIN or password");

  $("btn-patrol").addEventListener("click", () => command("patrol", {}));
  $("btn-signout").addEventListener("click", () => command("sign_out", {}));

  window.addEventListener("resize", () => {
    fitAll();
    if (view) renderChart(view);
  });

  // -- start ----------------------------------------------------------------------------------------------
  connected(false);
  $("conn").textContent = "connecting…";
  loadOnce();
  connect();
  refocus();
})();
