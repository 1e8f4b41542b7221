// castway watch page: hls.js in low-latency mode, native HLS as the fallback.
// Shows the live latency (hls.js's estimate, and now - EXT-X-PROGRAM-DATE-TIME).
"use strict";
(function () {
  const video = document.getElementById("video");
  const status = document.getElementById("status");
  const src = video.dataset.src;
  const live = video.dataset.live === "1";
  const player = { video: video, hls: null, errors: [] };
  window.castwayPlayer = player;

  function show(text) { status.textContent = text; }

  // --- what a viewer is told: never hls.js's error names (they stay in player.errors
  // for tests and the console). The #problem box is the one place a message appears.
  function showProblem(text, retry) {
    let box = document.getElementById("problem");
    if (!box) {
      box = document.createElement("p");
      box.id = "problem";
      box.className = "problem";
      box.setAttribute("role", "status");
      video.insertAdjacentElement("afterend", box);
    }
    box.replaceChildren(document.createTextNode(text + " "));
    if (retry) {
      const button = document.createElement("button");
      button.textContent = "Retry";
      button.addEventListener("click", function () { clearProblem(); retry(); });
      box.appendChild(button);
    }
    box.hidden = false;
  }

  function clearProblem() {
    const box = document.getElementById("problem");
    if (box) { box.hidden = true; }
  }

  // The channel page's "offline" notice goes once the picture moves.
  function onPlaying() {
    const offline = document.getElementById("offline");
    if (offline) { offline.hidden = true; }
    clearProblem();
  }
  video.addEventListener("playing", onPlaying);

  // hls.js's advice (docs/API.md, "Fatal Error Recovery"): a fatal network error ->
  // startLoad(), a fatal media error -> recoverMediaError(), anything else is the end of
  // this player: offer a retry. Non-fatal errors are recovered by hls.js on its own
  // (bufferSeekOverHole, a part or fragment retried): nothing to tell the viewer.
  let mediaRecoveries = 0;

  function onHlsError(hls, data) {
    const Hls = window.Hls;
    player.errors.push(data.type + "/" + data.details + (data.fatal ? " (fatal)" : ""));
    if (!data.fatal) { return; }
    if (data.details === Hls.ErrorDetails.MANIFEST_LOAD_ERROR ||
        data.details === Hls.ErrorDetails.MANIFEST_LOAD_TIMEOUT) {
      // Not live yet (or the transcoder is starting): try the channel again.
      show(live ? "Waiting for the broadcast to start…" : "Loading…");
      setTimeout(function () { hls.loadSource(src); }, 2000);
    } else if (data.type === Hls.ErrorTypes.NETWORK_ERROR) {
      showProblem("The connection to the stream was interrupted; reconnecting…", null);
      setTimeout(function () { hls.startLoad(); }, 1000);
    } else if (data.type === Hls.ErrorTypes.MEDIA_ERROR && mediaRecoveries < 3) {
      mediaRecoveries += 1;
      hls.recoverMediaError();
    } else {
      showProblem(live ? "The stream stopped playing." : "This video stopped playing.",
                  function () { mediaRecoveries = 0; hls.loadSource(src); hls.startLoad(); });
    }
  }

  // A broadcast whose encoder sent several audio tracks has an audio rendition for each
  // (docs/transcoder.md, "Audio tracks"): the viewer picks one; the first is the default.
  function audioMenu(hls) {
    const old = document.getElementById("audio");
    if (old) { old.parentElement.remove(); }
    if (hls.audioTracks.length < 2) { return; }
    const select = document.createElement("select");
    select.id = "audio";
    hls.audioTracks.forEach(function (track, i) {
      const option = document.createElement("option");
      option.value = String(i);
      option.textContent = track.name || ("Audio " + (i + 1));
      option.selected = i === hls.audioTrack;
      select.appendChild(option);
    });
    select.addEventListener("change", function () { hls.audioTrack = Number(select.value); });
    const label = document.createElement("label");
    label.append("Audio ", select);
    const row = document.createElement("p");
    row.appendChild(label);
    status.insertAdjacentElement("beforebegin", row);
  }

  function tick() {
    const hls = player.hls;
    const parts = [];
    if (live && hls) {
      if (Number.isFinite(hls.latency) && hls.latency > 0) {
        parts.push("latency " + hls.latency.toFixed(2) + " s");
      }
      const playing = hls.playingDate;
      if (playing) {
        parts.push("behind real time " + ((Date.now() - playing.getTime()) / 1000).toFixed(2) + " s");
      }
    }
    parts.push("t=" + video.currentTime.toFixed(1) + " s");
    if (!video.paused || video.currentTime > 0) { show(parts.join(" · ")); }
  }

  if (window.Hls && window.Hls.isSupported()) {
    const hls = new window.Hls({ lowLatencyMode: true, backBufferLength: 30 });
    player.hls = hls;
    hls.on(window.Hls.Events.ERROR, function (_event, data) { onHlsError(hls, data); });
    hls.on(window.Hls.Events.MANIFEST_PARSED, function () {
      video.play().catch(function () { show("Press play to start."); });
    });
    hls.on(window.Hls.Events.AUDIO_TRACKS_UPDATED, function () { audioMenu(hls); });
    hls.loadSource(src);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = src;
    video.addEventListener("error", function () {
      showProblem("This video could not be played.", function () { video.load(); });
    });
    video.play().catch(function () { show("Press play to start."); });
  } else {
    show("This browser cannot play HLS without hls.js.");
    return;
  }
  setInterval(tick, 500);
})();
