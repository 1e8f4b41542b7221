"""POST /api/v1/encoder-configuration answers OBS Multitrack Video's configuration
request (GetClientConfiguration) with what OBS reads: an RTMP URL template, one encoder
configuration per track, the audio, and a status OBS shows when it is not success."""

from __future__ import annotations

import copy
from typing import Any

import httpx

from castway.live.memory import MemoryLiveState
from castway.model import Node, NodeState
from tests.origin.conftest import AUTH

# What OBS 32 posts (frontend/utility/GoLiveAPI_PostData.cpp: the output size and rate
# per canvas, the main canvas first; values of one real machine's kind).
OBS_POST: dict[str, Any] = {
    "service": "IVS",
    "schema_version": "2025-01-25",
    "authentication": "",
    "client": {"name": "obs-studio", "version": "32.0.2",
               "supported_codecs": ["h264", "h265", "av1"],
               "supported_encoders": ["obs_nvenc_h264_tex", "obs_x264"]},
    "capabilities": {
        "cpu": {"physical_cores": 8, "logical_cores": 16, "speed": 3600, "name": "CPU"},
        "memory": {"total": 34359738368, "free": 17179869184},
        "gaming_features": {"game_bar_enabled": True, "hags_enabled": True},
        "system": {"version": "10.0", "name": "Windows", "build": 22631, "release": "23H2",
                   "revision": 4317, "bits": 64, "arm": False, "armEmulation": False},
        "gpu": [{"model": "NVIDIA GeForce RTX 4070", "vendor_id": 4318, "device_id": 10118,
                 "dedicated_video_memory": 12878610432, "shared_system_memory": 17146068992,
                 "driver_version": "32.0.15.6094"}],
    },
    "preferences": {"maximum_aggregate_bitrate": None, "maximum_video_tracks": None,
                    "vod_track_audio": False, "composition_gpu_index": 0,
                    "canvases": [{"width": 1920, "height": 1080, "canvas_width": 1920,
                                  "canvas_height": 1080,
                                  "framerate": {"numerator": 60, "denominator": 1}}],
                    "audio_samples_per_sec": 48000, "audio_channels": 2,
                    "audio_fixed_buffering": False, "audio_max_buffering_ms": 960},
}
# OBS 30.2 to 31 (schema 2024-06-04) sent the output size and rate in the preferences.
OBS_31_PREFERENCES: dict[str, Any] = {
    "maximum_aggregate_bitrate": None, "maximum_video_tracks": None,
    "vod_track_audio": False, "width": 1920, "height": 1080,
    "framerate": {"numerator": 60, "denominator": 1}, "canvas_width": 1920,
    "canvas_height": 1080, "composition_gpu_index": 0}


async def _key(client: httpx.AsyncClient) -> str:
    created = await client.post("/api/v1/channels", headers=AUTH, json={"name": "gamer"})
    assert created.status_code == 201
    key: str = created.json()["stream_key"]["stream_key"]
    return key


def post_with(key: str, **preferences: Any) -> dict[str, Any]:
    body = copy.deepcopy(OBS_POST)
    body["authentication"] = key
    canvas = body["preferences"]["canvases"][0]
    for name in ("width", "height", "framerate"):
        if name in preferences:  # the main canvas's
            canvas[name] = preferences.pop(name)
    body["preferences"].update(preferences)
    return body


async def test_obs_with_an_nvidia_gpu_is_given_the_platform_ladder_and_where_to_publish(
        client: httpx.AsyncClient) -> None:
    key = await _key(client)
    # No admin token: the stream key in the body is the credential.
    response = await client.post("/api/v1/encoder-configuration", json=post_with(key))
    assert response.status_code == 200, response.text
    config = response.json()
    assert config["status"]["result"] == "success"
    assert config["meta"]["config_id"] and config["meta"]["schema_version"] == "2025-01-25"
    # OBS takes the first RTMP* endpoint and cuts "/{stream_key}" off its template.
    [endpoint] = config["ingest_endpoints"]
    assert endpoint == {"protocol": "RTMP",
                        "url_template": "rtmp://127.0.0.1:1935/live/{stream_key}"}
    encoders = config["encoder_configurations"]
    assert [(e["type"], e["width"], e["height"], e["framerate"]["numerator"],
             e["framerate"]["denominator"], e["settings"]["bitrate"]) for e in encoders] == [
        ("obs_nvenc_h264_tex", 1920, 1080, 60, 1, 7500),
        ("obs_nvenc_h264_tex", 1280, 720, 60, 1, 4200),
        ("obs_nvenc_h264_tex", 854, 480, 30, 1, 1400),
        ("obs_nvenc_h264_tex", 640, 360, 30, 1, 800),
        ("obs_nvenc_h264_tex", 284, 160, 30, 1, 250)]
    # Every keyframe a segment boundary: each track passes through.
    assert {e["settings"]["keyint_sec"] for e in encoders} == {2}
    assert {e["settings"]["rate_control"] for e in encoders} == {"CBR"}
    assert {e["canvas_index"] for e in encoders} == {0}  # the main canvas
    assert config["audio_configurations"] == {"live": [
        {"codec": "ffmpeg_aac", "track_id": 0, "channels": 2, "settings": {"bitrate": 160}}]}


async def test_obs_31_which_sends_its_output_size_in_the_preferences_gets_the_same_ladder(
        client: httpx.AsyncClient) -> None:
    key = await _key(client)
    body = copy.deepcopy(OBS_POST) | {"schema_version": "2024-06-04",
                                      "preferences": OBS_31_PREFERENCES,
                                      "authentication": key}
    body["client"]["version"] = "31.1.2"
    config = (await client.post("/api/v1/encoder-configuration", json=body)).json()
    assert config["status"]["result"] == "success"
    assert [(e["width"], e["height"]) for e in config["encoder_configurations"]] == [
        (1920, 1080), (1280, 720), (854, 480), (640, 360), (284, 160)]


async def test_a_streamer_with_obs_vod_track_gets_its_audio_encoder_too(
        client: httpx.AsyncClient) -> None:
    # OBS refuses to go live when it has a VOD track and the answer has no encoder for
    # it (MultitrackVideoOutput: MissingEncoderConfigs). It sends it as audio track 1.
    key = await _key(client)
    config = (await client.post("/api/v1/encoder-configuration", json=post_with(
        key, vod_track_audio=True))).json()
    assert config["status"]["result"] == "success"
    assert config["audio_configurations"]["vod"] == [
        {"codec": "ffmpeg_aac", "track_id": 1, "channels": 2, "settings": {"bitrate": 160}}]


async def test_the_streamers_limits_are_kept(client: httpx.AsyncClient) -> None:
    key = await _key(client)
    config = (await client.post("/api/v1/encoder-configuration", json=post_with(
        key, maximum_video_tracks=2))).json()
    assert [e["height"] for e in config["encoder_configurations"]] == [1080, 720]
    config = (await client.post("/api/v1/encoder-configuration", json=post_with(
        key, maximum_aggregate_bitrate=10_000))).json()
    # 7500 + 4200 + 160 of audio is over 10 000: the rungs go from the bottom up, and
    # castway encodes them.
    assert [e["height"] for e in config["encoder_configurations"]] == [1080]


def node(free: float, state: NodeState = NodeState.ACTIVE) -> Node:
    """A node's heartbeat as its agent sends it (scheduler.agent): 1.70 cores of
    capacity (2 cores at the 0.85 target), ``free`` of them unused."""
    return Node(id=f"n{free}", image_version="v1", address="127.0.0.1:1935", state=state,
                cost_capacity=1.70, cost_used=1.70 - free)


async def test_a_fleet_without_the_cores_to_fill_the_ladder_gets_tracks_spread_over_it(
        client: httpx.AsyncClient, live: MemoryLiveState) -> None:
    key = await _key(client)

    async def heights() -> list[int]:
        config = (await client.post("/api/v1/encoder-configuration", json=post_with(
            key, maximum_video_tracks=3))).json()
        assert config["status"]["result"] == "success"
        return [e["height"] for e in config["encoder_configurations"]]
    # No node reports its capacity: castway fills the bottom of the ladder.
    assert await heights() == [1080, 720, 480]
    # The freest active node has 0.05 cores left: 360p and 160p from a 1080p60 source
    # cost far more (castway.cost, the built-in calibration), so the encoder's three
    # tracks span the ladder. A draining node's free cores are not on offer.
    await live.heartbeat(node(0.05), 60)
    await live.heartbeat(node(1.70, NodeState.DRAINING), 60)
    assert await heights() == [1080, 480, 160]
    # A node with room enough: the top three again.
    await live.heartbeat(node(1.60), 60)
    assert await heights() == [1080, 720, 480]


async def test_an_unknown_stream_key_is_an_error_obs_shows(client: httpx.AsyncClient) -> None:
    await _key(client)
    config = (await client.post("/api/v1/encoder-configuration",
                                json=post_with("cw_not-a-key"))).json()
    assert config["status"]["result"] == "error"
    assert "stream key" in config["status"]["html_en_us"]
    assert config["encoder_configurations"] == [] and config["ingest_endpoints"] == []


async def test_without_a_hardware_encoder_obs_is_told_to_stream_one_track(
        client: httpx.AsyncClient) -> None:
    key = await _key(client)
    body = post_with(key)
    body["capabilities"]["gpu"] = [{"model": "Basic Display", "vendor_id": 0x1414,
                                    "device_id": 140}]
    config = (await client.post("/api/v1/encoder-configuration", json=body)).json()
    # A warning with no encoders: OBS offers to stream without Multitrack Video.
    assert config["status"]["result"] == "warning"
    assert config["encoder_configurations"] == []


async def test_a_request_without_its_output_size_is_refused_clearly(
        client: httpx.AsyncClient) -> None:
    body = copy.deepcopy(OBS_POST)
    del body["preferences"]
    response = await client.post("/api/v1/encoder-configuration", json=body)
    assert response.status_code == 422
    assert "preferences" in response.text


async def test_out_of_range_values_are_refused_and_a_zero_frame_rate_is_a_warning(
        client: httpx.AsyncClient) -> None:
    key = await _key(client)
    for bad in ({"width": 100_000}, {"height": -1}, {"maximum_video_tracks": 0},
                {"framerate": {"numerator": 30, "denominator": 0}}):
        response = await client.post("/api/v1/encoder-configuration",
                                     json=post_with(key, **bad))
        assert response.status_code == 422, (bad, response.text)
    body = post_with(key)
    body["authentication"] = "k" * 10_000
    assert (await client.post("/api/v1/encoder-configuration", json=body)).status_code == 422
    config = (await client.post("/api/v1/encoder-configuration", json=post_with(
        key, framerate={"numerator": 0, "denominator": 1}))).json()
    assert config["status"]["result"] == "warning"
    assert config["encoder_configurations"] == []
