// castway admin: channels, stream keys, live broadcasts and VODs through /api/v1.
// The token stays in this tab's sessionStorage; every value is inserted as text.
"use strict";
(function () {
  const $ = function (id) { return document.getElementById(id); };
  const tokenInput = $("token");
  tokenInput.value = sessionStorage.getItem("castway-token") || "";

  async function api(method, path, body) {
    const response = await fetch("/api/v1" + path, {
      method: method,
      headers: Object.assign({ "Authorization": "Bearer " + tokenInput.value },
                             body ? { "Content-Type": "application/json" } : {}),
      body: body ? JSON.stringify(body) : undefined,
    });
    if (response.status === 204) { return null; }
    const data = await response.json();
    if (!response.ok) {
      const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
      throw new Error(response.status + ": " + detail);
    }
    return data;
  }

  function cell(row, content) {
    const td = document.createElement("td");
    if (content instanceof Node) { td.appendChild(content); } else { td.textContent = content; }
    row.appendChild(td);
  }

  function button(label, action) {
    const b = document.createElement("button");
    b.textContent = label;
    b.addEventListener("click", function (e) { e.preventDefault(); action().catch(report); });
    return b;
  }

  function report(error) { $("who").textContent = String(error.message || error); }

  function showKey(created) {
    $("key").textContent = "Stream key for " + created.channel + " (shown once): " +
      created.stream_key + "  ·  server: " + created.rtmp_url +
      (created.rtmps_url ? "  ·  with TLS: " + created.rtmps_url : "");
  }

  function since(iso) {
    const d = new Date(iso);
    return d.toLocaleString(undefined, { day: "numeric", month: "short",
                                         hour: "2-digit", minute: "2-digit" });
  }

  function number(value, digits, unit) {
    return value === null || value === undefined ? "…" : value.toFixed(digits) + unit;
  }

  // One broadcast's health: "good", or each warning with what to change in OBS.
  function health(h) {
    const box = document.createElement("div");
    if (!h.warnings.length) {
      box.className = h.status === "good" ? "ok" : "muted";
      box.textContent = h.status === "good" ? "good" : "measuring…";
      return box;
    }
    h.warnings.forEach(function (w) {
      const line = document.createElement("div");
      line.className = "warn";
      line.textContent = w.message + (w.advice ? " → " + w.advice : "");
      line.title = w.code;
      box.appendChild(line);
    });
    return box;
  }

  async function refreshLive() {
    const live = await api("GET", "/broadcasts?state=live");
    const liveBody = $("live").querySelector("tbody");
    liveBody.replaceChildren();
    live.forEach(function (b) {
      const row = document.createElement("tr");
      row.dataset.broadcast = b.id;  // the VOD's id too: operators and tests find it by it
      row.title = "broadcast " + b.id;
      const h = b.health;
      const link = document.createElement("a");
      link.href = "/watch/" + encodeURIComponent(b.channel);
      link.textContent = b.channel;
      cell(row, link);
      cell(row, since(b.started_at));
      cell(row, number(h.bitrate_kbps, 0, " kbit/s"));
      cell(row, number(h.fps, 1, " fps"));
      cell(row, number(h.keyframe_interval_s, 1, " s"));
      cell(row, health(h));
      cell(row, button("Stop", async function () {
        await api("POST", "/broadcasts/" + encodeURIComponent(b.id) + "/stop");
        $("who").textContent = "stopping " + b.channel + " (" + b.id + "): its VOD follows";
        row.remove();  // its node is ending it: it is live no more
      }));
      liveBody.appendChild(row);
    });
  }

  let liveTimer = null;
  function watchLive() {
    if (liveTimer === null) {
      liveTimer = setInterval(function () { refreshLive().catch(report); }, 2000);
    }
  }

  async function refresh() {
    const channels = await api("GET", "/channels");
    const tbody = $("channels").querySelector("tbody");
    tbody.replaceChildren();
    channels.forEach(function (c) {
      const row = document.createElement("tr");
      const link = document.createElement("a");
      link.href = "/watch/" + encodeURIComponent(c.name);
      link.textContent = c.name;
      cell(row, link);
      cell(row, c.title);
      cell(row, c.live_broadcast_id ? "live" : "");
      const actions = document.createElement("span");
      actions.appendChild(button("New key (revoke old)", async function () {
        showKey(await api("POST", "/channels/" + encodeURIComponent(c.name) + "/keys/rotate"));
      }));
      actions.appendChild(button("Delete", async function () {
        if (confirm("Delete channel " + c.name + "?")) {
          await api("DELETE", "/channels/" + encodeURIComponent(c.name));
          await refresh();
        }
      }));
      cell(row, actions);
      tbody.appendChild(row);
    });
    await refreshLive();
    const vods = await api("GET", "/vods");
    const vodBody = $("vods").querySelector("tbody");
    vodBody.replaceChildren();
    vods.forEach(function (v) {
      const row = document.createElement("tr");
      const link = document.createElement("a");
      link.href = "/watch/vod/" + encodeURIComponent(v.id);
      link.textContent = v.title;
      cell(row, link);
      cell(row, v.state + ", " + v.visibility);
      cell(row, button(v.visibility === "public" ? "Make private" : "Make public", async function () {
        await api("PATCH", "/vods/" + encodeURIComponent(v.id),
                  { visibility: v.visibility === "public" ? "private" : "public" });
        await refresh();
      }));
      cell(row, button("Delete", async function () {
        if (confirm("Delete this VOD and its files?")) {
          await api("DELETE", "/vods/" + encodeURIComponent(v.id));
          await refresh();
        }
      }));
      vodBody.appendChild(row);
    });
    $("who").textContent = "token accepted";
    watchLive();
  }

  $("save").addEventListener("click", function () {
    sessionStorage.setItem("castway-token", tokenInput.value);
    refresh().catch(report);
  });
  $("create").addEventListener("submit", function (e) {
    e.preventDefault();
    api("POST", "/channels", { name: $("name").value, title: $("title").value })
      .then(function (created) { showKey(created.stream_key); return refresh(); })
      .catch(report);
  });
  if (tokenInput.value) { refresh().catch(report); }
})();
