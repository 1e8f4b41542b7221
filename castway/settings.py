"""castway's one settings object.

Every setting is read from a ``CASTWAY_*`` environment variable (or a ``.env`` file) and
passed down explicitly; nothing else in castway reads the environment. The README's
settings table is checked against this class by ``tests/castway/test_settings.py``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from castway.cost import AdmissionMode

X264_LOOKAHEAD_FRAMES = 5  # frames; the transcoder's default too (transcoder.pipeline)


class FirstVariant(StrEnum):
    """Which variant a live master playlist lists first (docs/origin.md, "The first
    variant"): players without a bandwidth estimate start there (Safari plays it first;
    hls.js seeds its estimate with its bitrate, up to 5 Mbit/s)."""

    SOURCE = "source"  # the passthrough: the freshest variant, no encoder delay
    LOWEST = "lowest"  # the lowest bandwidth: the safest start on a slow link


class SegmentFormat(StrEnum):
    """HLS segment container (RFC 8216bis section 3)."""

    FMP4 = "fmp4"
    MPEGTS = "mpegts"


class Settings(BaseSettings):
    """All of castway's configuration. Field docs are the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="CASTWAY_", env_file=".env", extra="ignore")

    # --- where things live -----------------------------------------------------------
    data_dir: Path = Field(Path("./data"), description="Data directory: SQLite catalog, "
                           "local storage, spool, admin token.")
    database_url: str | None = Field(None, description="SQLAlchemy URL of the catalog; "
                                     "default: SQLite at DATA_DIR/castway.db.")
    catalog_timeout_s: float = Field(
        5.0, gt=0, description="A PostgreSQL catalog call with no answer within this "
        "(pooled-connection wait, connect and statements together) fails as unavailable "
        "and its connection is closed: a frozen or black-holed server. Migrations wait.")
    redis_url: str | None = Field(None, description="Redis for live state and events "
                                  "(distributed mode); default: in-process live state.")
    storage_url: str | None = Field(None, description="Archive storage: a directory path, "
                                    "file:///path or s3://bucket/prefix; default "
                                    "DATA_DIR/storage.")
    s3_endpoint_url: str | None = Field(None, description="Endpoint of any S3 API "
                                        "(MinIO, moto); default: AWS.")
    s3_region: str = Field("us-east-1", description="S3 region.")

    # --- network ---------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address every listener binds.")
    rtmp_port: int = Field(1935, description="RTMP ingest port.")
    http_port: int = Field(8080, description="Origin / control API HTTP port.")
    public_url: str | None = Field(None, description="Public base URL of the origin or CDN "
                                   "(for printed watch URLs); default http://HOST:HTTP_PORT.")
    public_rtmp_url: str | None = Field(None, description="Public RTMP URL printed for OBS; "
                                        "default rtmp://HOST:RTMP_PORT/live.")
    rtmp_app: str = Field("live", description="RTMP application name publishers use.")
    rtmps_port: int = Field(0, ge=0, le=65535, description="RTMPS (RTMP over TLS) "
                            "ingest port; 0: off. Needs TLS_CERT_FILE and TLS_KEY_FILE.")
    tls_cert_file: Path | None = Field(None, description="PEM certificate (leaf, then "
                                       "chain) of the RTMPS listener; re-read on SIGHUP.")
    tls_key_file: Path | None = Field(None, description="PEM private key of "
                                      "TLS_CERT_FILE; re-read on SIGHUP.")
    public_rtmps_url: str | None = Field(None, description="Public RTMPS URL printed for "
                                         "OBS; default rtmps://HOST:RTMPS_PORT/live when "
                                         "RTMPS is on.")
    proxy_protocol: bool = Field(False, description="Expect a PROXY protocol (v2 or v1) "
                                 "header on every RTMP and RTMPS connection (behind an NLB "
                                 "with proxy protocol on); a connection without one is "
                                 "refused.")
    relay_proxy_protocol: bool = Field(False, description="castway edge: begin every "
                                       "relay to a transcoding node with a PROXY v2 header "
                                       "naming the publisher, so the node's limits, logs "
                                       "and publish authorization see the publisher, not "
                                       "the edge (the nodes then need PROXY_PROTOCOL on).")
    srt_port: int = Field(0, ge=0, description="SRT ingest port (UDP, listener mode; "
                          "libsrt); 0: SRT off. Publishers call "
                          "srt://HOST:PORT?streamid=#!::r=live/KEY,m=publish.")
    srt_latency_ms: int = Field(120, ge=20, le=8000, description="SRT receiver latency "
                                "(TSBPD delay): how long lost packets have to be resent "
                                "before they are given up; the larger of it and the "
                                "caller's wins.")
    srt_passphrase: str | None = Field(None, min_length=10, max_length=79, description=(
        "SRT passphrase: set, only callers with the same passphrase connect and the "
        "stream is AES-encrypted; unset, callers with a passphrase are refused."))
    whip: bool = Field(True, description="WHIP ingest (WebRTC, RFC 9725) on the HTTP port: "
                       "POST /whip/{channel} with Authorization: Bearer KEY; H.264 and "
                       "Opus; media over UDP (ICE host candidates).")
    whip_ice_addresses: str = Field("", description="Comma-separated local addresses WHIP "
                                    "gathers ICE candidates on; empty: every interface "
                                    "but loopback (aiortc's default).")
    max_connections: int | None = Field(None, description="Client connections (HTTP and "
                                        "RTMP together) this process holds at most; 1/8 "
                                        "of them for RTMP. Default: half the "
                                        "file-descriptor limit (raised to the hard limit "
                                        "at start).")
    http_header_timeout_s: float = Field(10.0, description="An HTTP connection must send "
                                         "a complete request head within this (else 408 "
                                         "and closed).")
    http_keepalive_timeout_s: float = Field(5.0, description="Close an idle keep-alive "
                                            "HTTP connection after this.")

    # --- security --------------------------------------------------------------------
    admin_token: str | None = Field(None, description="Bearer token of the control API; "
                                    "generated on first start and kept in DATA_DIR.")
    signing_key: str | None = Field(None, description="Key for signed URLs of private "
                                    "VODs; generated and kept in DATA_DIR when unset.")
    signing_key_id: str | None = Field(None, description="Key-Pair-Id of SIGNING_KEY (the "
                                       "CloudFront public key id); default: derived from "
                                       "the key.")

    # --- ingest ----------------------------------------------------------------------
    node_id: str | None = Field(None, description="This ingest node's id; default: "
                                "hostname-pid.")
    image_version: str = Field("dev", description="Version of the running image; the "
                               "scheduler expires nodes whose version is not the desired one.")
    node_capacity: int = Field(8, description="Broadcasts on this ingest node at most, "
                               "whatever they cost (with ADMISSION=slots, the only limit).")
    admission: AdmissionMode = Field(AdmissionMode.REDUCE, description="What a publish "
                                     "whose full ladder does not fit the node's free "
                                     "transcode capacity gets: 'reduce' (the richest "
                                     "ladder that fits, down to source passthrough), "
                                     "'refuse' (an RTMP error, for fleets behind a load "
                                     "balancer) or 'slots' (NODE_CAPACITY broadcasts with "
                                     "full ladders, cost ignored).")
    utilisation_target: float = Field(0.85, gt=0, le=1, description="Share of the node's "
                                      "cores that transcoding may use (its capacity in "
                                      "cost units: cores x this).")
    calibration_file: Path | None = Field(None, description="The node's cost calibration "
                                          "(`castway calibrate`); default "
                                          "DATA_DIR/calibration.json, a built-in one when "
                                          "that is missing.")
    refuse_reserve_source: str = Field("1920x1080@30", description="With "
                                       "ADMISSION=refuse, a publish is admitted only if "
                                       "the full ladder of a source this size "
                                       "(WIDTHxHEIGHT@FPS) fits: RTMP answers publish "
                                       "before the source is described.")
    reconnect_grace_s: float = Field(10.0, description="A broadcast whose publisher drops "
                                     "continues if the same key publishes again within this.")
    stop_timeout_s: float = Field(110.0, description="On SIGTERM, `castway ingest` drains "
                                  "and waits this long for its broadcasts to end before "
                                  "cutting them (below ECS's 120 s stopTimeout).")
    handshake_timeout_s: float = Field(10.0, description="RTMP handshake (and a WHIP "
                                       "session's ICE and DTLS) must finish within this.")
    idle_timeout_s: float = Field(30.0, description="Close a publisher that sends no media "
                                  "for this long.")
    max_connections_per_ip: int = Field(16, description="Concurrent RTMP connections "
                                        "allowed from one address.")
    rtmp_auth_timeout_s: float = Field(10.0, description="An RTMP connection must have "
                                       "its publish accepted within this of connecting.")
    rtmp_max_preauth_connections: int = Field(64, description="RTMP connections not yet "
                                              "publishing (handshake, connect, key check) "
                                              "held at once; more are closed at accept.")

    publish_auth_url: str | None = Field(None, description="Publish authorization "
                                         "callback: before accepting a publish castway "
                                         "POSTs {channel, key_id, client_addr} here and "
                                         "accepts on a 2xx answer only; unset: the stream "
                                         "key alone decides.")
    publish_auth_timeout_s: float = Field(3.0, gt=0, description="A publish whose "
                                          "authorization callback has not answered "
                                          "within this is refused.")
    publish_auth_cache_s: float = Field(0.0, ge=0, description="The callback's answer for "
                                        "one channel, key and client address is reused "
                                        "this long (0: asked on every publish).")

    # --- transcoding -----------------------------------------------------------------
    transcode: bool = Field(True, description="Run a transcoder per broadcast (off: "
                            "ingest only).")
    ladder: str = Field("auto", description="ABR ladder: 'auto' (derived from the source), "
                        "'source' (passthrough only), or a path to a ladder JSON file.")
    x264_preset: str = Field("veryfast", description="x264 preset of encoded renditions: "
                             "the quality/CPU knob.")
    x264_lookahead_frames: int = Field(
        X264_LOOKAHEAD_FRAMES, ge=0, le=250, description="x264's rate-control lookahead of "
        "encoded renditions, in frames: each frame of it is a frame of delay behind the "
        "source.")
    segment_format: SegmentFormat = Field(SegmentFormat.FMP4, description="fmp4 (CMAF, "
                                          "LL-HLS parts) or mpegts.")
    target_segment_s: float = Field(2.0, description="Target segment duration; segments "
                                    "cut at the first source keyframe past it, or without "
                                    "one before EXTINF would round above it.")
    part_target_s: float = Field(0.5, description="LL-HLS part target duration.")
    master_first_variant: FirstVariant = Field(
        FirstVariant.SOURCE, description="The variant a live master lists first, where "
        "players start: 'source' (lowest latency) or 'lowest' (slow links).")
    live_window_segments: int = Field(10, description="Segments in a live media playlist.")
    dvr_window_s: float | None = Field(None, description="Time-shift window of the live "
                                       "DVR playlist; default: from the broadcast start.")

    # --- archive ---------------------------------------------------------------------
    vod_retention_days: int | None = Field(None, description="Delete VODs older than "
                                           "this; default: keep forever.")
    celery_broker_url: str | None = Field(None, description="Celery broker; default: "
                                          "REDIS_URL; unset: archiver runs in-process.")
    archive_reconcile_interval_s: float = Field(
        30.0, gt=0, description="Every this often the archiver looks for broadcasts "
        "without a complete VOD (missed events, crashed nodes) and archives them.")

    # --- scheduler -------------------------------------------------------------------
    desired_version: str | None = Field(None, description="Image version the scheduler "
                                        "converges the fleet to; default IMAGE_VERSION.")
    scheduler_interval_s: float = Field(60.0, description="Seconds between scheduler ticks.")
    heartbeat_ttl_s: float = Field(30.0, description="A node whose heartbeat is older is "
                                   "lost.")
    headroom_min_slots: int = Field(2, description="Free capacity kept at least, in "
                                    "broadcasts of HEADROOM_BROADCAST_COST each.")
    headroom_fraction: float | None = Field(
        None, ge=0, description="Free capacity kept as a fraction of what the live "
        "broadcasts cost. Default 0.2 on one tier; 0 behind an edge tier (EDGE_TIER), where "
        "every broadcast can move and the headroom is what the measured publish rate needs "
        "(docs/scheduler.md).")
    headroom_broadcast_cost: float = Field(
        1.0, gt=0, description="Cores one broadcast is counted at when the scheduler "
        "sizes its headroom's floor (about a 1080p60 source with the full ladder on the "
        "calibration machine), an expected publish's when no live broadcast's cost is "
        "known, and for a node that reports no transcode cost.")
    max_nodes: int = Field(20, description="Largest fleet the scheduler starts.")
    capacity_windows: str | None = Field(None, description="Scheduled capacity floors, comma-"
                                  "separated HH:MM-HH:MM:nodes[:free_slots] in UTC, e.g. "
                                  "'20:00-02:00:6:16' (prime time).")
    scheduler_backend: str = Field("local", description="'local' (ingest processes on "
                                   "this machine), 'ecs' (Amazon ECS tasks) or 'static' "
                                   "(a fleet run by something else: compose, the embedded "
                                   "node).")
    edge_tier: bool = Field(False, description="The fleet has an RTMP edge tier in front "
                            "of the transcoding nodes (castway edge): the scheduler keeps "
                            "both, each with its own policy.")
    edge_capacity: int = Field(100, ge=1, description="Publishers one edge node takes at "
                               "most. One edge process is one event loop, at most a core; "
                               "castway bench edge measured 61 % of it relaying 100 720p30 "
                               "publishers (1.1 % each at 20, 1.6 % at 60 fps: size by "
                               "your sources' frame rate).")
    edge_headroom_min_slots: int = Field(20, ge=0, description="Free publisher slots kept "
                                         "at least on the edge tier.")
    edge_headroom_fraction: float = Field(0.2, ge=0, description="Free publisher slots kept "
                                          "on the edge tier as a fraction of its "
                                          "publishers.")
    edge_max_nodes: int = Field(10, ge=1, description="Largest edge tier the scheduler "
                                "starts.")
    edge_desired_version: str | None = Field(None, description="Image version of the edge "
                                             "tier; default DESIRED_VERSION (edges are "
                                             "rarely deployed: each drain waits for its "
                                             "publishers).")

    # --- webhooks --------------------------------------------------------------------
    webhook_allow_private: bool = Field(False, description="Allow webhook receivers on "
                                        "loopback, private, link-local and other internal "
                                        "addresses (development and tests only).")
    webhook_timeout_s: float = Field(15.0, gt=0, description="A webhook delivery attempt "
                                     "with no answer within this failed.")
    webhook_backoff_base_s: float = Field(5.0, gt=0, description="Delay before the first "
                                          "retry of a failed webhook delivery; each next "
                                          "retry waits twice as long (with jitter).")
    webhook_backoff_max_s: float = Field(3600.0, gt=0, description="Longest delay between "
                                         "two attempts of a webhook delivery.")
    webhook_max_attempts: int = Field(24, ge=1, description="Attempts of a webhook "
                                      "delivery before it is given up (about 14 hours "
                                      "with the default backoff).")
    webhook_sweep_s: float = Field(30.0, gt=0, description="Distributed mode: how often "
                                   "the worker running beat re-sends pending webhook "
                                   "deliveries overdue by more than this (their task was "
                                   "lost, or a redelivery was asked for).")

    # --- restreaming ------------------------------------------------------------------
    restream_key: str | None = Field(None, description="Fernet key that encrypts restream "
                                     "targets' stream keys at rest; default: "
                                     "DATA_DIR/restream.key, made on first start. The API "
                                     "and the ingest nodes need the same one.")
    restream_queue_bytes: int = Field(16 * 1024 * 1024, ge=65536, description="Media "
                                      "queued per restream target at most; a target that "
                                      "falls further behind loses its oldest GOPs.")
    restream_backoff_base_s: float = Field(1.0, gt=0, description="Delay before the first "
                                           "reconnect to a failed restream target; each "
                                           "next one waits twice as long (with jitter).")
    restream_backoff_max_s: float = Field(30.0, gt=0, description="Longest delay between "
                                          "two connection attempts to a restream target.")
    restream_alert_after: int = Field(5, ge=1, description="Consecutive failed attempts "
                                      "of a restream target that send restream.failed "
                                      "(it is still retried while the broadcast is live).")

    # --- chat ------------------------------------------------------------------------
    chat_redis_urls: str | None = Field(None, description="Comma-separated Redis URLs chat "
                                        "rooms are sharded over (consistent hashing by "
                                        "channel); default REDIS_URL; unset: in-process.")
    chat_history: int = Field(50, description="Recent chat messages kept per channel and "
                              "sent on join.")
    chat_rate_per_s: float = Field(1.0, description="Chat messages per second one "
                                   "connection may send (token bucket refill).")
    chat_rate_burst: int = Field(5, description="Chat messages one connection may send in "
                                 "a burst.")
    chat_max_connects_per_s: float = Field(200.0, description="Chat WebSocket connections "
                                           "set up per second per process (reconnect "
                                           "storms wait or are told to retry).")
    chat_max_connections_per_ip: int = Field(32, description="Chat WebSockets open at "
                                             "once from one client address; more are "
                                             "closed with code 1008.")
    chat_send_queue: int = Field(256, description="Frames queued per chat connection; a "
                                 "client that falls further behind is disconnected.")

    # --- operations ------------------------------------------------------------------
    log_level: str = Field("INFO", description="Logging level.")
    log_json: bool | None = Field(None, description="JSON logs; default: when stderr is "
                                  "not a TTY.")
    malloc_arena_max: int = Field(2, ge=0, description="glibc malloc arenas per process "
                                  "(0: glibc's default, 8 per core); castway/allocator.py.")
    malloc_mmap_threshold_kib: int = Field(
        128, ge=0, description="Buffers of at least this size are mapped, and go back to "
        "the system when freed (0: glibc's sliding default); castway/allocator.py.")
    malloc_trim_s: float = Field(30.0, ge=0, description="Seconds between malloc_trim "
                                 "calls giving free pages back to the system (0: never).")
    debug_tracemalloc_dir: Path | None = Field(
        None, description="`castway serve` traces Python allocations and writes a heap "
        "snapshot here every minute, for a leak hunt (costs memory and CPU; "
        "castway/memtrace.py compares two).")

    # --- derived ---------------------------------------------------------------------
    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'castway.db').resolve()}"

    @property
    def effective_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url
        return str((self.data_dir / "storage").resolve())

    @property
    def effective_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.http_port}").rstrip("/")

    @property
    def effective_public_rtmp_url(self) -> str:
        return (self.public_rtmp_url or f"rtmp://{self.host}:{self.rtmp_port}/{self.rtmp_app}")

    @property
    def effective_public_rtmps_url(self) -> str | None:
        """The RTMPS URL for OBS, or None when RTMPS is off."""
        if self.public_rtmps_url:
            return self.public_rtmps_url
        if not self.rtmps_port:
            return None
        return f"rtmps://{self.host}:{self.rtmps_port}/{self.rtmp_app}"
