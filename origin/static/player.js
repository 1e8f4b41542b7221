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
    if (player.errors.length) { parts.push("last error: " + player.errors[player.errors.length - 1]); }
    show(parts.join(" · "));
  }

  if (window.Hls && window.Hls.isSupported()) {
    const hls = new window.Hls({ lowLatencyMode: true, backBufferLength: 30 });
    player.hls = hls;
    hls.on(window.Hls.Events.ERROR, function (_event, data) {
      player.errors.push(data.type + "/" + data.details + (data.fatal ? " (fatal)" : ""));
      if (data.fatal && data.details === window.Hls.ErrorDetails.MANIFEST_LOAD_ERROR) {
        // Not live yet (or the transcoder is starting): try the channel again.
        show("waiting for the broadcast to start…");
        setTimeout(function () { hls.loadSource(src); }, 2000);
      } else if (data.fatal && data.type === window.Hls.ErrorTypes.NETWORK_ERROR) {
        setTimeout(function () { hls.startLoad(); }, 1000);
      } else if (data.fatal && data.type === window.Hls.ErrorTypes.MEDIA_ERROR) {
        hls.recoverMediaError();
      }
    });
    hls.on(window.Hls.Events.MANIFEST_PARSED, function () {
      video.play().catch(function () { show("press play"); });
    });
    hls.loadSource(src);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = src;
    video.play().catch(function () { show("press play"); });
  } else {
    show("This browser cannot play HLS without hls.js.");
    return;
  }
  setInterval(tick, 500);
})();
