/* The material review page: a decision is sent to the nonconformance's station (signed as the
   signed-in quality user, checked by the gateway against its register) and shown once the
   gateway has put it on record. */
"use strict";

(function () {
  const body = document.body;
  if (!body.classList.contains("mrb-page")) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  for (const form of document.querySelectorAll(".dispose-form")) {
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      const result = form.querySelector(".dispose-result");
      const button = form.querySelector("button");
      const data = Object.fromEntries(new FormData(form).entries());
      button.disabled = true;
      result.className = "dispose-result";
      result.textContent = "Sending to the station…";
      let status = 0;
      let reply = {};
      try {
        const resp = await fetch("/mrb/" + encodeURIComponent(form.dataset.id) + "/dispose", {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
          body: JSON.stringify(data),
        });
        status = resp.status;
        reply = await resp.json().catch(function () { return {}; });
      } catch (e) {
        reply = { error: "the dashboard is not reachable" };
      }
      if (status === 401) {
        location.href = "/login?expired=1";
        return;
      }
      if (status === 200 && reply.ok) {
        const li = form.closest(".nc");
        li.classList.add("decided");
        const note = document.createElement("div");
        note.className = "decided-note";
        note.textContent = "✓ closed: " + data.decision + " by " + body.dataset.user + " (signed, on record)";
        form.replaceWith(note);
        return;
      }
      result.className = "dispose-result error";
      result.textContent = reply.error || "not decided (HTTP " + status + ")";
      button.disabled = false;
    });
  }
})();
