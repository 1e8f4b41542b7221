"""Server-rendered pages: live channels, the watch pages (hls.js, low latency), admin.

Plain f-strings; every value from the catalog or the live state goes through
``html.escape``; the small scripts live in ``origin/static``. hls.js is fetched from the
npm registry at setup (``web/install.sh``) into ``origin/static/vendor/``; without it the
watch page says so and falls back to the browser's native HLS.
"""

from __future__ import annotations

import asyncio
import json
from html import escape
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from castway.layout import BroadcastFile, poster_key, valid_component
from castway.model import BroadcastState, Visibility, Vod, VodState, valid_channel_name
from castway.signing import (
    COOKIE_EXPIRES,
    COOKIE_KEY_PAIR_ID,
    COOKIE_POLICY,
    COOKIE_SIGNATURE,
)
from origin.context import Ctx, OriginContext
from origin.humanize import date_text, duration_text, vod_started_at, vod_title
from origin.responses import CacheKind

router = APIRouter(tags=["pages"], include_in_schema=False)

STATIC_DIR = Path(__file__).parent / "static"
HLS_JS = STATIC_DIR / "vendor" / "hls.min.js"
FAVICON = STATIC_DIR / "favicon.svg"
FAVICON_CACHE = "public, max-age=86400"
VODS_ON_INDEX = 12
VODS_ON_CHANNEL = 8

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#111;color:#eee}
header{padding:.8rem 1.2rem;background:#1c1c1c;display:flex;gap:1rem;align-items:center}
header a{color:#eee;text-decoration:none;font-weight:600}
main{padding:1.2rem;max-width:1100px;margin:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:1rem}
.card{background:#1c1c1c;border-radius:6px;overflow:hidden;color:#eee;text-decoration:none}
.card img,.card .noposter{width:100%;aspect-ratio:16/9;object-fit:cover;background:#333;
display:block}
.card p{margin:.5rem .7rem}
video{width:100%;max-height:75vh;background:#000}
.muted{color:#999}.warn{color:#fc6}
table{border-collapse:collapse;width:100%}td,th{padding:.3rem;border-bottom:1px solid #333;
text-align:left}
input,select,button{font:inherit;padding:.3rem;margin:.2rem}
code{background:#222;padding:.1rem .3rem}
a{color:#8ab4ff}a:visited{color:#c9a8ff}
.problem{background:#3a1d1d;color:#ffd7d7;padding:.5rem .8rem;border-radius:4px}
.problem button{margin-left:.5rem}
.ok{color:#7ddc8a}
"""


def _page(title: str, body: str, *, scripts: tuple[str, ...] = ()) -> HTMLResponse:
    tags = "".join(f'<script src="{escape(s)}"></script>' for s in scripts)
    html = (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>{escape(title)} · castway</title>"
            f"<link rel=icon href='/favicon.ico' type='image/svg+xml'>"
            f"<style>{_STYLE}</style></head>"
            f"<body><header><a href='/'>castway</a><a href='/admin'>admin</a></header>"
            f"<main>{body}</main>{tags}</body></html>")
    return HTMLResponse(html, headers={"cache-control": CacheKind.PAGE.value})


def _not_found(what: str) -> HTMLResponse:
    response = _page("not found", f"<h1>Not found</h1><p>{escape(what)}</p>")
    response.status_code = 404
    response.headers["cache-control"] = CacheKind.ERROR.value
    return response


@router.get("/", response_class=HTMLResponse)
async def index(ctx: Ctx) -> HTMLResponse:
    live = sorted((b for b in await ctx.live.list_broadcasts()
                   if b.state is BroadcastState.LIVE), key=lambda b: b.started_at,
                  reverse=True)
    cards = []
    for broadcast in live:
        channel = await asyncio.to_thread(ctx.catalog.get_channel, broadcast.channel)
        if channel is not None and channel.live_visibility is Visibility.PRIVATE:
            continue  # its viewers come with a grant's watch URL
        title = channel.title if channel and channel.title else broadcast.channel
        has_poster = await ctx.storage_pool.run(ctx.storage.exists,
                                             poster_key(broadcast.id))
        poster = (f"<img src='/hls/b/{escape(broadcast.id)}/{BroadcastFile.POSTER}' alt=''>"
                  if has_poster else "<div class=noposter></div>")
        cards.append(f"<a class=card href='/watch/{escape(broadcast.channel)}'>{poster}"
                     f"<p><strong>{escape(title)}</strong><br>"
                     f"<span class=muted>{escape(broadcast.channel)} · live since "
                     f"{escape(date_text(broadcast.started_at))}</span></p></a>")
    body = "<h1>Live now</h1>" + (f"<div class=grid>{''.join(cards)}</div>" if cards
                                  else "<p class=muted>Nobody is live right now.</p>")
    vods = await _public_vods(ctx, channel=None, limit=VODS_ON_INDEX)
    body += "<h2>Recent broadcasts</h2>" + await _vod_grid(ctx, vods)
    return _page("live", body)


async def _public_vods(ctx: OriginContext, *, channel: str | None, limit: int) -> list[Vod]:
    """The newest VODs anyone may watch (private ones are listed in the admin only)."""
    vods = await asyncio.to_thread(ctx.catalog.list_vods, channel=channel, limit=limit * 2)
    return [v for v in vods if v.visibility is Visibility.PUBLIC
            and v.state is VodState.COMPLETE][:limit]


async def _vod_grid(ctx: OriginContext, vods: list[Vod]) -> str:
    if not vods:
        return "<p class=muted>No recorded broadcasts yet.</p>"
    cards = []
    for vod in vods:
        has_poster = await ctx.storage_pool.run(ctx.storage.exists,
                                                poster_key(vod.broadcast_id))
        poster = (f"<img src='/hls/b/{escape(vod.broadcast_id)}/{BroadcastFile.POSTER}' "
                  f"alt='' loading=lazy>"
                  if has_poster else "<div class=noposter></div>")
        cards.append(f"<a class=card href='/watch/vod/{escape(vod.id)}'>{poster}"
                     f"<p><strong>{escape(vod.channel)}</strong><br><span class=muted>"
                     f"{escape(date_text(vod_started_at(vod)))} · "
                     f"{escape(duration_text(vod.duration_s))}</span></p></a>")
    return f"<div class=grid>{''.join(cards)}</div>"


def _player(src: str, *, live: bool) -> str:
    vendor = HLS_JS.exists()
    notice = "" if vendor else (
        "<p class=warn id=nohlsjs>hls.js is not installed (run <code>make web</code>); "
        "using the browser's native HLS player, which may not play here.</p>")
    return (f"{notice}<video id=video controls muted autoplay playsinline "
            f"data-src='{escape(src)}' data-live='{'1' if live else '0'}'></video>"
            f"<p id=status class=muted>loading…</p>")


@router.get("/watch/vod/{vod_id}", response_class=HTMLResponse)
async def watch_vod(vod_id: str, request: Request, ctx: Ctx) -> HTMLResponse:
    if not valid_component(vod_id):
        return _not_found("no such VOD")
    vod = await asyncio.to_thread(ctx.catalog.get_vod, vod_id)
    if vod is None or vod.state is VodState.DELETED:
        return _not_found("no such VOD")
    private = vod.visibility is Visibility.PRIVATE
    master = f"/vod/{vod.id}/master.m3u8"
    if private and not ctx.access.allows(request, as_path=master):
        return _not_found("no such VOD")
    title = vod_title(vod)
    body = (f"<h1>{escape(vod.channel)} <span class=muted>· "
            f"{escape(date_text(vod_started_at(vod)))} · "
            f"{escape(duration_text(vod.duration_s))}</span></h1>"
            + _player(master, live=False)
            + f"<p><a href='/watch/{escape(vod.channel)}'>More from {escape(vod.channel)}</a>"
            f"</p>")
    response = _page(title, body, scripts=_player_scripts())
    if private:
        response.headers["cache-control"] = CacheKind.NO_STORE.value
        _set_signature_cookies(response, request, ctx, ctx.access.cookie_path(vod.id))
    return response


def _set_signature_cookies(response: HTMLResponse, request: Request, ctx: OriginContext,
                           path: str) -> None:
    """Turn a signed watch URL into the CloudFront-* cookies the player's requests carry
    (the same three values CloudFront reads, scoped to the VOD's or channel's path)."""
    query = request.query_params
    names = {"Policy": COOKIE_POLICY, "Signature": COOKIE_SIGNATURE,
             "Key-Pair-Id": COOKIE_KEY_PAIR_ID, "Expires": COOKIE_EXPIRES}
    if not any(name in query for name in names):
        return  # already authorised by its cookies
    secure = ctx.settings.effective_public_url.startswith("https:")
    for param, cookie in names.items():
        value = query.get(param)
        if value is not None:
            response.set_cookie(cookie, value, path=path,
                                httponly=True, samesite="lax", secure=secure)


@router.get("/watch/{channel}", response_class=HTMLResponse)
async def watch(channel: str, request: Request, ctx: Ctx) -> HTMLResponse:
    if not valid_channel_name(channel):
        return _not_found("no such channel")
    record = await asyncio.to_thread(ctx.catalog.get_channel, channel)
    private = record is not None and record.live_visibility is Visibility.PRIVATE
    if private and not ctx.access.allows(request, as_path=f"/hls/{channel}/master.m3u8"):
        return _not_found("no such channel")  # a private channel's page needs a grant
    broadcast = await ctx.live.live_broadcast(channel)
    if record is None and broadcast is None:
        return _not_found(f"no channel {channel}")
    title = record.title if record and record.title else channel
    vods = await _public_vods(ctx, channel=channel, limit=VODS_ON_CHANNEL)
    state = "" if broadcast else _offline_notice(vods)
    player = _player(f"/hls/{channel}/master.m3u8", live=True)
    for extension in ctx.extensions:
        player = extension.beside_player(player, channel)
    body = (f"<h1>{escape(title)} <span class=muted>· {escape(channel)}</span></h1>"
            f"{state}{player}<h2>Past broadcasts</h2>{await _vod_grid(ctx, vods)}")
    response = _page(title, body, scripts=_player_scripts())
    if private:
        response.headers["cache-control"] = CacheKind.NO_STORE.value
        _set_signature_cookies(response, request, ctx, ctx.access.channel_cookie_path(channel))
    return response


def _offline_notice(vods: list[Vod]) -> str:
    """Hidden by the player once the broadcast plays (the page keeps trying)."""
    last = (f" Meanwhile, watch the last broadcast: <a href='/watch/vod/{escape(vods[0].id)}'>"
            f"{escape(vod_title(vods[0]))}</a>." if vods else "")
    return (f"<p class=muted id=offline>Offline: this page starts playing by itself when "
            f"the channel goes live.{last}</p>")


def _player_scripts() -> tuple[str, ...]:
    return (("/static/vendor/hls.min.js",) if HLS_JS.exists() else ()) + ("/static/player.js",)


@router.get("/admin", response_class=HTMLResponse)
async def admin(ctx: Ctx) -> HTMLResponse:
    config = json.dumps({"rtmp": ctx.settings.effective_public_rtmp_url,
                         "rtmps": ctx.settings.effective_public_rtmps_url})
    body = (
        "<h1>Admin</h1>"
        "<p><label>API token <input id=token type=password size=40 autocomplete=off>"
        "</label><button id=save>Use token</button> <span id=who class=muted></span></p>"
        "<h2>Channels</h2>"
        "<form id=create><input id=name placeholder='channel-name' required "
        "pattern='[a-z0-9]([a-z0-9_-]{0,62}[a-z0-9])?'>"
        "<input id=title placeholder='Title'><button>Create</button></form>"
        "<p id=key class=warn></p>"
        "<table id=channels><thead><tr><th>Channel</th><th>Title</th><th>Live</th><th></th>"
        "</tr></thead><tbody></tbody></table>"
        "<h2>Live broadcasts</h2><p class=muted>Refreshed every 2 s. Health: what the "
        "encoder sends and what to change in OBS.</p>"
        "<table id=live><thead><tr><th>Channel</th><th>Since</th><th>Bitrate</th>"
        "<th>Frame rate</th><th>Keyframes every</th><th>Health</th><th></th></tr></thead>"
        "<tbody></tbody></table>"
        "<h2>VODs</h2><table id=vods><tbody></tbody></table>"
        f"<script type=application/json id=config>{escape(config)}</script>")
    response = _page("admin", body, scripts=("/static/admin.js",))
    response.headers["cache-control"] = CacheKind.NO_STORE.value
    return response


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    """An SVG at the address browsers ask for (they read the type, not the name)."""
    return Response(FAVICON.read_bytes(), media_type="image/svg+xml",
                    headers={"cache-control": FAVICON_CACHE})
