/* The chart page: follows /events and, when values of the characteristic on screen arrive
   ("series" events), fetches its figures again from the server and swaps them in. The SVG
   is drawn on the server (collector/web_charts.py); nothing is drawn here. */
"use strict";

(function () {
  const body = document.body;
  if (!body.classList.contains("chart-page")) return;
  const station = body.dataset.station;
  const characteristic = body.dataset.characteristic;
  const box = document.getElementById("figures");
  const conn = document.getElementById("conn");
  let busy = false;
  let again = false;
  let source = null;

  async function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      const url = "/chart/figures?" + new URLSearchParams({ station: station, characteristic: characteristic });
      const resp = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (resp.status === 401) {
        location.href = "/login?expired=1";
        return;
      }
      if (resp.ok) {
        box.innerHTML = await resp.text();
        body.dataset.updates = String(Number(body.dataset.updates || "0") + 1);
      }
    } catch (e) {
      /* the next event tries again */
    } finally {
      busy = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  }

  function connect() {
    source = new EventSource("/events");
    source.addEventListener("snapshot", function () {
      conn.className = "conn live";
      conn.textContent = "LIVE";
      body.dataset.live = "1";
    });
    source.addEventListener("series", function (ev) {
      let list;
      try {
        list = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (!station || !characteristic) {
        if (list.length) location.reload(); /* the first values: the list of characteristics fills */
        return;
      }
      if (list.some(function (x) { return x.station_key === station && x.characteristic === characteristic; })) {
        refresh();
      }
    });
    source.addEventListener("expired", function () {
      source.close();
      location.href = "/login?expired=1";
    });
    source.onerror = function () {
      conn.className = "conn wait";
      conn.textContent = "RECONNECTING";
      delete body.dataset.live;
    };
  }
  connect();
})();
