// The player harness of benchmarks/players.py: one page per player (hls.js, Shaka Player,
// video.js with VHS), served from another origin than castway's, each player with its
// defaults except where a comment says why. window.harness is driven over CDP:
//   harness.start(src)      load a multivariant playlist and play it (muted autoplay)
//   harness.levels()        the renditions [{index, height, bandwidth}]
//   harness.switchTo(i)     force rendition i through the player's API (ABR off)
//   harness.audioTracks()   the master's audio renditions [{index, name, default}]
//                           (hls.js; the other players' pages answer null)
//   harness.switchAudio(i)  play audio rendition i instead (hls.js)
//   harness.waitFor(f, ms)  a Promise resolved once f(harness.state) is true (checked on
//                           every sample, every SAMPLE_MS)
//   harness.state           {errors, manifestRetries, stalls, playing, samples, ...}
// A sample is {at (ms, wall clock), t (currentTime), latency (s: wall clock minus the
// EXT-X-PROGRAM-DATE-TIME of the playing position), estimate (the player's own latency
// figure, if it has one), height (of the frames on screen), waiting}.
"use strict";
(function () {
  const SAMPLE_MS = 100;
  // Before a broadcast has media, castway answers the master 404 (not live yet) or 503 +
  // Retry-After (renditions still starting); a page keeps asking for this long.
  const MANIFEST_RETRY_MS = 1000;
  const MANIFEST_RETRIES = 40;
  const video = document.getElementById("video");
  const name = document.body.dataset.player;
  const state = {
    player: name, errors: [], warnings: [], manifestRetries: 0, stalls: 0, playing: false,
    firstPlayingAt: null, samples: [], switchedAt: null, audioSwitchedAt: null, events: [],
  };
  performance.setResourceTimingBufferSize(100000);

  let adapter = null;
  const waiters = [];

  function error(text) { state.errors.push(text); }

  video.addEventListener("playing", function () {
    if (!state.playing) { state.playing = true; state.firstPlayingAt = Date.now(); }
  });
  // A stall: the element waits for data after playback has started. Not a seek: the
  // element also fires `waiting` while it seeks (hls.js seeks to its live start position
  // just after the first frames play), and that is not the buffer running dry.
  video.addEventListener("waiting", function () {
    if (state.playing && !video.seeking) { state.stalls += 1; }
  });
  video.addEventListener("error", function () {
    error("video element: " + (video.error ? video.error.code + " " + video.error.message : "?"));
  });

  function sample() {
    if (adapter === null) { return; }
    // A player that failed may throw from its API (Shaka after a fatal error): sampling,
    // and the waiters, go on without its figures.
    let date = null;
    let estimate = null;
    try { date = adapter.playingDate(); estimate = adapter.estimate(); } catch (e) { /* none */ }
    const now = Date.now();
    state.samples.push({
      at: now, t: video.currentTime,
      latency: date ? (now - date.getTime()) / 1000 : null,
      estimate: estimate, height: video.videoHeight,
      waiting: video.readyState < 3,
    });
    if (state.samples.length > 20000) { state.samples.splice(0, 10000); }
    for (let i = waiters.length - 1; i >= 0; i -= 1) {
      let done = false;
      try { done = waiters[i].test(state); } catch (e) { waiters[i].reject(e); waiters.splice(i, 1); continue; }
      if (done) { waiters[i].resolve(true); waiters.splice(i, 1); }
    }
  }

  function retryManifest(load) {
    if (state.playing || state.manifestRetries >= MANIFEST_RETRIES) { return false; }
    state.manifestRetries += 1;
    setTimeout(load, MANIFEST_RETRY_MS);
    return true;
  }

  // hls.js with its defaults (lowLatencyMode is on by default); a page retry of the
  // master while the broadcast is not live yet (404: hls.js does not retry 4xx).
  function hlsjs(src) {
    const Hls = window.Hls;
    const hls = new Hls({
      // 503 + Retry-After while the renditions start: retried (hls.js's default: once).
      manifestLoadPolicy: { default: {
        maxTimeToFirstByteMs: Infinity, maxLoadTimeMs: 20000,
        timeoutRetry: { maxNumRetry: 2, retryDelayMs: 0, maxRetryDelayMs: 0 },
        errorRetry: { maxNumRetry: MANIFEST_RETRIES, retryDelayMs: MANIFEST_RETRY_MS,
                      maxRetryDelayMs: MANIFEST_RETRY_MS } } },
    });
    hls.on(Hls.Events.ERROR, function (_event, data) {
      const text = data.type + "/" + data.details + (data.fatal ? " (fatal)" : "");
      if (data.fatal && data.details === Hls.ErrorDetails.MANIFEST_LOAD_ERROR &&
          retryManifest(function () { hls.loadSource(src); })) {
        return;
      }
      if (data.fatal) { error(text); } else { state.warnings.push(text); }
    });
    // A trace of what hls.js did and when (the bench's --player-trace): where the time
    // between the first playlist and the first frame goes.
    function trace(what, extra) {
      if (state.events.length < 2000) {
        state.events.push(Object.assign({ at: Date.now(), what: what, t: video.currentTime,
                                          latency: hls.latency, target: hls.targetLatency,
                                          level: hls.currentLevel }, extra));
      }
    }
    hls.on(Hls.Events.MANIFEST_PARSED, function () { trace("manifest", {}); });
    hls.on(Hls.Events.LEVEL_LOADED, function (_e, d) {
      trace("level-loaded", { loaded: d.level, edge: d.details.edge, age: d.details.age,
                              live: d.details.live, partTarget: d.details.partTarget });
    });
    hls.on(Hls.Events.LEVEL_SWITCHING, function (_e, d) { trace("switching", { to: d.level }); });
    hls.on(Hls.Events.LEVEL_SWITCHED, function (_e, d) { trace("switched", { to: d.level }); });
    hls.on(Hls.Events.FRAG_LOADED, function (_e, d) {
      trace("loaded", { of: d.frag.level, sn: d.frag.sn, part: d.part ? d.part.index : null,
                        start: (d.part || d.frag).start, duration: (d.part || d.frag).duration });
    });
    hls.on(Hls.Events.BUFFER_APPENDED, function () {
      const b = video.buffered;
      trace("appended", { buffered: b.length ? [b.start(0), b.end(b.length - 1)] : null });
    });
    video.addEventListener("playing", function () { trace("playing", {}); });
    video.addEventListener("seeking", function () { trace("seeking", {}); });
    hls.loadSource(src);
    hls.attachMedia(video);
    return {
      levels: function () {
        return hls.levels.map(function (l, i) { return { index: i, height: l.height, bandwidth: l.bitrate }; });
      },
      switchTo: function (i) { hls.currentLevel = i; },
      audioTracks: function () {
        return hls.audioTracks.map(function (t, i) { return { index: i, name: t.name, default: t.default }; });
      },
      switchAudio: function (i) { hls.audioTrack = i; },
      playingDate: function () { return hls.playingDate; },
      estimate: function () { return hls.latency || null; },
    };
  }

  // Shaka Player: its low-latency mode is off by default; LL-HLS needs it.
  function shaka(src) {
    const lib = window.shaka;
    lib.polyfill.installAll();
    const player = new lib.Player();
    player.configure({
      streaming: { lowLatencyMode: true },
      manifest: { retryParameters: { maxAttempts: MANIFEST_RETRIES, baseDelay: MANIFEST_RETRY_MS,
                                     backoffFactor: 1, fuzzFactor: 0, timeout: 30000 } },
    });
    player.addEventListener("error", function (event) {
      const e = event.detail;
      const text = "shaka " + e.severity + "/" + e.category + "/" + e.code + " " +
        String(JSON.stringify(e.data)).slice(0, 300);
      // As for hls.js: only what the player cannot recover from is an error (a 404 on a
      // preload-hinted part that the segment ended before is RECOVERABLE, severity 1).
      if (e.severity === lib.util.Error.Severity.CRITICAL) { error(text); }
      else { state.warnings.push(text); }
    });
    function load() {
      player.load(src).then(function () { video.play().catch(function () {}); }, function (e) {
        if (e && e.category === lib.util.Error.Category.NETWORK && retryManifest(load)) { return; }
        error("shaka load: " + (e && e.code) + " " + String(e && (e.stack || e.message) || e).slice(0, 400) + " " + String(JSON.stringify(e && e.data)).slice(0, 300));
      });
    }
    player.attach(video).then(load);
    return {
      levels: function () {
        return player.getVideoTracks().map(function (t, i) { return { index: i, height: t.height, bandwidth: t.bandwidth }; });
      },
      switchTo: function (i) {
        player.configure({ abr: { enabled: false } });
        player.selectVideoTrack(player.getVideoTracks()[i], true);
      },
      playingDate: function () {
        try { return player.isLive() ? player.getPlayheadTimeAsDate() : null; } catch (e) { return null; }
      },
      estimate: function () {
        const stats = player.getStats();
        return Number.isFinite(stats.liveLatency) ? stats.liveLatency : null;
      },
    };
  }

  // video.js with VHS (LL-HLS on by default in VHS 3); VHS, not the browser's HLS.
  function videojs(src) {
    const vjs = window.videojs;
    const player = vjs(video, { autoplay: "muted", muted: true, liveui: false,
                                html5: { vhs: { overrideNative: true } } });
    let loaded = false;
    player.on("loadedmetadata", function () { loaded = true; });
    player.on("error", function () {
      const e = player.error();
      // VHS does not retry the master: the page does, until the broadcast has media.
      if (!loaded && e && e.code === 2 && retryManifest(load)) { player.error(null); return; }
      error("video.js " + (e ? e.code + " " + e.message : "?"));
    });
    function load() { player.src({ src: src, type: "application/x-mpegURL" }); }
    load();
    function vhs() { return player.tech({ IWillNotUseThisInPlugins: true }).vhs; }
    return {
      levels: function () {
        const levels = player.qualityLevels();
        const out = [];
        for (let i = 0; i < levels.length; i += 1) {
          out.push({ index: i, height: levels[i].height, bandwidth: levels[i].bitrate });
        }
        return out;
      },
      switchTo: function (i) {
        // VHS switches at once (its fast quality change: it drops the buffer and fetches
        // the new rendition from the playhead) only when a level goes from disabled to
        // enabled. Disabling the others only steers what it fetches next, so a VOD it has
        // buffered to the end would play out in the old rendition (a seek inside the
        // buffer does not drop it): disable every level, then enable the one wanted.
        const levels = player.qualityLevels();
        for (let j = 0; j < levels.length; j += 1) { levels[j].enabled = false; }
        levels[i].enabled = true;
      },
      // The segment under the playhead, dated by its EXT-X-PROGRAM-DATE-TIME.
      playingDate: function () {
        const media = vhs() && vhs().playlists.media();
        if (!media || media.endList || !media.segments) { return null; }
        const t = player.currentTime();
        for (const s of media.segments) {
          if (s.dateTimeObject && s.start !== undefined && s.end !== undefined &&
              s.start <= t && t < s.end) {
            return new Date(s.dateTimeObject.getTime() + (t - s.start) * 1000);
          }
        }
        return null;
      },
      estimate: function () {
        const tracker = player.liveTracker;
        return tracker && tracker.isLive() ? tracker.liveCurrentTime() - player.currentTime() : null;
      },
    };
  }

  const players = { "hls.js": hlsjs, shaka: shaka, videojs: videojs };

  window.harness = {
    state: state,
    start: function (src) {
      adapter = players[name](src);
      setInterval(sample, SAMPLE_MS);
      return true;
    },
    levels: function () { return adapter.levels(); },
    switchTo: function (i) { state.switchedAt = Date.now(); adapter.switchTo(i); return true; },
    audioTracks: function () { return adapter.audioTracks ? adapter.audioTracks() : null; },
    switchAudio: function (i) {
      state.audioSwitchedAt = Date.now();
      adapter.switchAudio(i);
      return true;
    },
    // Media fetched so far whose URL contains `needle` (cross-origin entries keep the URL).
    fetched: function (needle) {
      return performance.getEntriesByType("resource").map(function (e) { return e.name; })
        .filter(function (url) { return url.indexOf(needle) >= 0; });
    },
    waitFor: function (source, limitMs) {
      const test = new Function("state", "return (" + source + ");");
      return new Promise(function (resolve, reject) {
        waiters.push({ test: test, resolve: resolve, reject: reject });
        setTimeout(function () {
          reject(new Error("timed out waiting for " + source + "; state: " +
            JSON.stringify({ errors: state.errors, warnings: state.warnings.slice(-5),
                             retries: state.manifestRetries, playing: state.playing,
                             last: state.samples.slice(-1) })));
        }, limitMs);
      });
    },
  };
})();
