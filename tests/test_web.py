"""The in-browser page (web/) in headless Chromium, and its JavaScript audio handling.

One browser (puppeteer-core, tests/web) runs every page scenario once per module: a vamp of a
short stereo clip with the tiny model served as the demo model, then a bad model file, a bad audio
file and a model too large for the browser's memory. The page's output codes must equal Python
onnxruntime's on the page's own mono mix with the inputs the page fed (its rate included).

Installed on first use: Chromium from Debian's packages (when missing and running as root), the
test's puppeteer-core into .cache/web-tests, and onnxruntime-web into web/vendor/ by the command
the README documents (`npm ci --prefix web`).
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf

from conftest import OUTPUTS, runtime_only
from node_packages import CACHE, chromium, node, npm_ci, one_at_a_time, run
from tolerances import assert_audio_close
from vampnet_onnx import web
from numpy_reference import loudness
from vampnet_onnx.audio import PreparedAudio, restore
from vampnet_onnx.interface import DEFAULTS, preset_values
from vampnet_onnx.model import Model
from vampnet_onnx.preview import mask_preview
from vampnet_onnx.session import interface_feeds

HERE = Path(__file__).parent / "web"
# set to a path (docs/web-page.png for the README) to keep the screenshot of the page after the run
SCREENSHOT = os.environ.get("VAMPNET_ONNX_WEB_SCREENSHOT")
CLIP_S = 1.0
SAMPLE_RATE = 44100  # the tiny model's rate (web/audio.mjs's SAMPLE_RATE)
SETTINGS = {"seed": 7, "temperature": 0.6, "sampling_steps": 4}
# no sampling and no random re-masking: the codes depend on the arithmetic only
DETERMINISTIC = {"seed": 7, "sampling_steps": 4, "sample_cutoff": -1, "mask_temperature": 0,
                 "c2f_sample_cutoff": -1, "c2f_mask_temperature": 0}
TOO_LARGE = 5 * 2**30  # bytes of weights: more than wasm32's 4 GiB of memory
# Chromium's software WebGPU adapter takes minutes for what wasm does in seconds: a short clip and
# one step per stage
WEBGPU_CLIP_S = 0.3
WEBGPU_STEPS = {"seed": 7, "sampling_steps": 1, "c2f_sampling_steps": 1}
# the features whose graph paths are skipped by default (each built an empty tensor once: docs/browser.md)
WEBGPU_FEATURES = {"onset_mask_width": 2, "beat_mask_ms": 50.0, "dropout": 0.3, "time_stretch_factor": 2}
PREVIEW_PRESET = "timbre transfer"
PREVIEW_VALUES = {"seed": 5, "upper_codebook_mask": 2, "onset_mask_width": 2}  # typed over the preset


def preview_expected(model: Path) -> dict:
    """The values the page's preview must end with: the preset's (those the model has), then the typed ones."""
    inputs = {i.name for i in ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()}
    return {**preset_values(PREVIEW_PRESET, inputs), **PREVIEW_VALUES}


def vendored_runtime() -> None:
    """web/vendor/ as the README's command fills it."""
    with one_at_a_time("web-vendor"):
        if web.runtime_problem():
            node()
            run([shutil.which("npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=web.WEB, timeout=1800)
    assert web.runtime_problem() is None


def b64(text: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype)


def clip() -> np.ndarray:
    """A short stereo clip: a decaying two-note tone with noise, the right channel quieter."""
    t = np.arange(int(CLIP_S * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(0)
    x = 0.3 * np.sin(2 * np.pi * np.where(t < 0.5, 220, 330) * t) * np.exp(-2 * (t % 0.5))
    x += 0.03 * rng.standard_normal(t.size)
    return np.stack([x, 0.5 * x], axis=1)


def too_large_model(folder: Path) -> list[Path]:
    """A valid model whose one weight (external data, a sparse file: no disk space) is TOO_LARGE."""
    import onnx
    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[TOO_LARGE // 4])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "big.onnx.data"), ("offset", "0"), ("length", str(TOO_LARGE))):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "big", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [TOO_LARGE // 4])],
                              initializer=[weight])
    model = folder / "big.onnx"
    onnx.save_model(helper.make_model(graph), model)
    data = folder / "big.onnx.data"
    with open(data, "wb") as f:
        f.truncate(TOO_LARGE)
    return [model, data]


def with_external_data(model: Path, folder: Path, name: str = "external") -> list[Path]:
    """The model saved again with its weights (those of the Loop bodies too) in a .data file beside it."""
    import onnx

    path = folder / f"{name}.onnx"
    onnx.save_model(onnx.load(str(model)), path, save_as_external_data=True, location=f"{name}.onnx.data",
                    size_threshold=1024)
    return [path, folder / f"{name}.onnx.data"]


def as_built(base, weights: str, folder: Path) -> list[Path]:
    """The tiny model with `weights` as `vampnet-onnx build` writes it (builder/build.py): the
    components quantized, their weights moved to vampnet.onnx.data, the model assembled around them
    (and, for "web", rewritten once by onnxruntime's basic optimizations)."""
    import onnx

    from vampnet_onnx.builder.assemble import assemble
    from vampnet_onnx.builder.files import externalize_weights, save_model
    from vampnet_onnx.builder.quantize import WEB, quantize_components
    from vampnet_onnx.builder.web import preoptimize

    components = {name: onnx.ModelProto.FromString(c.SerializeToString()) for name, c in base.components.items()}
    quantize_components(components, weights)
    folder.mkdir(parents=True, exist_ok=True)
    externalize_weights(components, folder / "vampnet.onnx.data")
    written = save_model(assemble(base.codec, base.coarse, base.c2f, components=components, weights=weights),
                         folder / "vampnet.onnx")
    assert written == [folder / "vampnet.onnx"]  # the weights are in the .data file already
    if weights == WEB:
        preoptimize(folder / "vampnet.onnx")  # onnxruntime's basic rewrite, done once (builder/web.py)
    return [folder / "vampnet.onnx", folder / "vampnet.onnx.data"]


@pytest.fixture(scope="module")
def web_variant(tiny, tmp_path_factory) -> list[Path]:
    return as_built(tiny, "web", tmp_path_factory.mktemp("web-variant"))


@pytest.fixture(scope="module")
def servers(tiny, web_variant, tmp_path_factory):
    """The page on 127.0.0.1 (ephemeral ports) with the tiny model as its demo model: as
    `vampnet-onnx web` serves it ("isolated") and without the cross-origin isolation headers.
    Beside it, for opening by address: the model with a .data file, and web/vampnet.onnx, the
    browser's variant (`--weights web`) as `build` writes it."""
    vendored_runtime()
    demo = tmp_path_factory.mktemp("demo")
    os.symlink(tiny.path, demo / "vampnet-tiny.onnx")
    with_external_data(tiny.path, demo)
    (demo / "web").mkdir()
    for path in web_variant:
        os.symlink(path, demo / "web" / path.name)
    servers = {"isolated": web.make_server("127.0.0.1", 0, demo=demo),
               "plain": web.make_server("127.0.0.1", 0, demo=demo, isolated=False)}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {name: f"http://127.0.0.1:{server.server_address[1]}" for name, server in servers.items()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def served(servers):
    return servers["isolated"]


@pytest.fixture(scope="module")
def page(servers, tiny, build_variant, tmp_path_factory):
    """Every scenario's result (one browser for all)."""
    folder = tmp_path_factory.mktemp("page")
    sf.write(folder / "clip.wav", clip(), SAMPLE_RATE, subtype="PCM_16")
    (folder / "bad.onnx").write_bytes(b"this is not an ONNX model\n" * 20)
    (folder / "bad.wav").write_bytes(b"RIFF....WAVE but nothing of it is audio\n" * 20)
    scenarios = [
        {"name": "vamp", "audio": str(folder / "clip.wav"), "values": SETTINGS, "run": True,
         "screenshot": str(folder / "page.png")},
        {"name": "threads", "audio": str(folder / "clip.wav"), "values": DETERMINISTIC, "run": True},
        {"name": "one thread", "url": f"{servers['plain']}/web/", "audio": str(folder / "clip.wav"),
         "values": DETERMINISTIC, "run": True},
        {"name": "cancel", "audio": str(folder / "clip.wav"), "cancel": True},
        {"name": "preview", "audio": str(folder / "clip.wav"), "preview": {
            "preset": PREVIEW_PRESET, "values": PREVIEW_VALUES, "expect": preview_expected(tiny.path)}},
        {"name": "by address", "open_url": f"{servers['isolated']}/artifacts/demo/external.onnx"},
        {"name": "by address again", "open_url": f"{servers['isolated']}/artifacts/demo/external.onnx",
         "remove_cached": True},
        {"name": "external data", "model": [str(p) for p in with_external_data(tiny.path, folder)]},
        {"name": "int8", "model": [str(build_variant("tiny:int8").path)], "audio": str(folder / "clip.wav"),
         "values": SETTINGS, "run": True},
        {"name": "web variant", "open_url": f"{servers['isolated']}/artifacts/demo/web/vampnet.onnx",
         "url": f"{servers['isolated']}/web/?threads=1", "audio": str(folder / "clip.wav"), "values": SETTINGS,
         "run": True},
        {"name": "int8 with its .data", "model": [str(p) for p in with_external_data(
            build_variant("tiny:int8").path, folder, "int8-external")]},
        {"name": "bad model", "model": [str(folder / "bad.onnx")]},
        {"name": "bad audio", "audio": str(folder / "bad.wav")},
        {"name": "too large", "model": [str(p) for p in too_large_model(folder)]},
    ]
    results = drive(scenarios, f"{servers['isolated']}/web/", folder, timeout=600)
    results["folder"] = folder
    return results


@pytest.fixture(scope="module")
def webgpu_page(servers, tmp_path_factory):
    """Two short vamps on Chromium's software WebGPU adapter (minutes each, in their own browser),
    one session: the second run reuses the first's compiled shaders, which is most of the cost."""
    folder = tmp_path_factory.mktemp("webgpu")
    sf.write(folder / "short.wav", clip()[:int(WEBGPU_CLIP_S * SAMPLE_RATE)], SAMPLE_RATE, subtype="PCM_16")
    first = {**DETERMINISTIC, **WEBGPU_STEPS, **WEBGPU_FEATURES}
    sampled = {**{name: DEFAULTS[name] for name in first}, **WEBGPU_STEPS}  # the defaults again
    scenarios = [
        {"name": "webgpu", "browser": "webgpu", "audio": str(folder / "short.wav"), "values": first,
         "run": True, "timeout_s": 900, "again": {"name": "webgpu sampled", "values": sampled}},
    ]
    return drive(scenarios, f"{servers['isolated']}/web/", folder, timeout=1800)


def drive(scenarios: list[dict], url: str, folder: Path, timeout: int) -> dict:
    """Each scenario's result (tests/web/drive.mjs, one browser of each kind for all)."""
    (folder / "scenarios.json").write_text(json.dumps(scenarios))
    packages = npm_ci(HERE, CACHE / "web-tests", scripts=("drive.mjs",))
    run([node(), str(packages / "drive.mjs"), chromium(), url, str(folder / "scenarios.json"),
         str(folder / "results.json")], timeout=timeout)
    results = json.loads((folder / "results.json").read_text())
    for name, result in results.items():
        assert "failure" not in result, f"{name}: {result['failure']}"
    return results


def test_the_page_vamps_like_python_onnxruntime(page, tiny):
    vamp = page["vamp"]
    assert vamp["state"] == "done" and vamp["error"] is None, vamp
    assert "RANDOM weights" in vamp["notice"]  # the demo model says what it is

    # the page feeds the mean of the channels at the decoded rate (Chromium's 16-bit decoding
    # differs in the last bits)
    prepared = b64(vamp["prepared"], np.float32)
    stereo, _ = sf.read(page["folder"] / "clip.wav", dtype="float64")
    np.testing.assert_allclose(prepared, stereo.mean(axis=1), rtol=1e-4, atol=1e-7)
    assert int(vamp["values"]["sample_rate"]) == SAMPLE_RATE

    # the page fed every parameter: the model's defaults and the test's settings
    values = {k: int(v) if isinstance(v, str) else v for k, v in vamp["values"].items()}
    for name, value in SETTINGS.items():
        assert values[name] == value
    session = ort.InferenceSession(str(tiny.path), providers=["CPUExecutionProvider"])
    want = dict(zip(OUTPUTS, session.run(OUTPUTS, interface_feeds(prepared[None, :], **values))))
    got = {name: b64(o["data"], np.float32 if o["type"] == "float32" else np.int64).reshape(o["dims"])
           for name, o in vamp["outputs"].items()}
    for name in OUTPUTS[1:]:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert_audio_close(got["audio_out"], want["audio_out"], "the page's audio_out")

    # the page stayed responsive while the worker ran: the elapsed time kept changing
    assert len({t for t in vamp["ticks"] if t.startswith("running")}) >= 2, vamp["ticks"]


def page_outputs(result: dict) -> dict[str, np.ndarray]:
    return {name: b64(o["data"], np.float32 if o["type"] == "float32" else np.int64).reshape(o["dims"])
            for name, o in result["outputs"].items()}


def python_outputs(model: Path, result: dict) -> dict[str, np.ndarray]:
    """Python onnxruntime's outputs on the page's mono mix with the values the page fed."""
    values = {k: int(v) if isinstance(v, str) else v for k, v in result["values"].items()}
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    prepared = b64(result["prepared"], np.float32)
    return dict(zip(OUTPUTS, session.run(OUTPUTS, interface_feeds(prepared[None, :], **values))))


def test_threads_where_the_page_is_cross_origin_isolated_and_the_same_codes(page, tiny):
    """Served with COOP/COEP the page runs onnxruntime-web on every core; served without, on one
    thread, and says why. Both give Python onnxruntime's codes."""
    threaded, single = page["threads"], page["one thread"]
    assert threaded["runtime"] == {"backend": "wasm", "threads": threaded["runtime"]["threads"], "isolated": True}
    assert threaded["runtime"]["threads"] == threaded["cores"] and "WebAssembly, " in threaded["backend"]
    assert single["runtime"] == {"backend": "wasm", "threads": 1, "isolated": False}
    assert "not cross-origin isolated" in single["backend"]
    for result in (threaded, single):
        assert result["state"] == "done" and result["error"] is None, result
        assert {k: float(result["values"][k]) for k in DETERMINISTIC} == {k: float(v) for k, v in DETERMINISTIC.items()}
        got, want = page_outputs(result), python_outputs(tiny.path, result)
        for name in OUTPUTS[1:]:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_the_page_offers_the_output_as_wav_at_the_inputs_shape_and_loudness(page):
    vamp = page["vamp"]
    data, rate = sf.read(io.BytesIO(base64.b64decode(vamp["wav"])), dtype="float64")
    assert rate == SAMPLE_RATE and data.shape == clip().shape
    assert np.all(np.isfinite(data)) and np.any(data)
    if np.max(np.abs(data)) < 0.999:  # else the peak limit made it quieter, as in the Python host
        assert abs(loudness(data[None, :, 0], rate)[0] - loudness(clip().mean(axis=1)[None], rate)[0]) < 0.1


def test_the_page_draws_codes_and_mask(page):
    canvas = page["vamp"]["canvas"]
    assert canvas["width"] > 0 and canvas["height"] > 0
    assert canvas["colours"] > 50 and canvas["inked"] > 0.5, canvas  # three filled panels
    if SCREENSHOT:
        shutil.copy(page["folder"] / "page.png", SCREENSHOT)


def test_webgpu_runs_the_whole_vamp_close_to_wasm(webgpu_page, tiny):
    """With Chromium's WebGPU adapter the page runs on WebGPU (wasm for the ops it lacks): no kernel
    fails, the mask is exact, and the codes agree with Python onnxruntime's (equal to wasm's, see
    the tests above) but not exactly, since WebGPU's Sin is looser than float32 (the codec's Snake
    activations; docs/browser.md). The deterministic run also switches on the features whose graph
    paths are skipped by default (WEBGPU_FEATURES). Measured on the 0.3 s clip before those were
    added: 251 of 252 input codes equal (codebook 0 all), and all 243 generated tokens equal in both
    runs; the bounds leave room for a flipped input code that changes the steps after it."""
    for name, generated_agree in (("webgpu", 0.9), ("webgpu sampled", 0.75)):
        result = webgpu_page[name]
        assert result["state"] == "done" and result["error"] is None, result
        assert result["runtime"]["backend"] == "webgpu" and result["backend"].startswith("running on WebGPU")
        assert not [line for line in result["log"] if "failed" in line.lower()], result["log"]
        got, want = page_outputs(result), python_outputs(tiny.path, result)
        np.testing.assert_array_equal(got["mask_out"], want["mask_out"])
        np.testing.assert_array_equal(got["codes"][:, 0], want["codes"][:, 0])
        assert (got["codes"] == want["codes"]).mean() >= 0.95
        generated = want["mask_out"] == 1
        assert (got["codes_out"] == want["codes_out"])[generated].mean() >= generated_agree, name
        assert np.isfinite(got["audio_out"]).all() and np.any(got["audio_out"])


def test_the_page_shows_an_eta_from_this_devices_last_run(page):
    """The first run on an origin guesses from the model's size; later ones use the speed the last
    run measured (kept in localStorage, per origin: the unisolated page's first run guesses again)."""
    first, later, other_origin = page["vamp"], page["threads"], page["one thread"]
    assert any(re.search(r"running \.\.\. [\d.]+ s, (about [\d.]+ s left|longer than the [\d.]+ s expected) "
                         r"\(a first guess", t) for t in first["ticks"]), first["ticks"]
    assert first["eta"]["source"].startswith("a first guess") and first["eta"]["ms"] > 0
    assert later["eta"]["source"] == "measured on this device" and later["eta"]["ms"] > 0
    assert any("measured on this device" in t for t in later["ticks"]), later["ticks"]
    assert other_origin["eta"]["source"].startswith("a first guess")
    assert re.fullmatch(r"done in [\d.]+ s \(expected [\d.]+ s\)", first["status"]), first["status"]


def test_the_page_draws_the_waveforms_with_the_kept_regions(page):
    waves = page["vamp"]["waveforms"]
    assert not waves["hidden"] and waves["width"] > 0
    area = waves["width"] * waves["height"]
    mask = b64(page["vamp"]["outputs"]["mask_out"]["data"], np.int64).reshape(page["vamp"]["outputs"]["mask_out"]["dims"])
    assert (mask[0, 0] == 0).any()  # the default periodic prompt keeps frames: shaded
    assert waves["wave"] > 0.01 * area and waves["kept"] > 0.005 * area and waves["white"] > 0.2 * area, waves


def test_the_page_previews_the_mask_live_from_the_preset_and_the_controls(page, tiny):
    """The preview re-ran after the preset and the typed values (debounced, in the worker), and
    shows the mask a full run uses, with the onsets the Python preview finds."""
    result = page["preview"]
    assert result["error"] is None and "previews" in result, result
    preview = result["preview"]
    assert preview["serial"] > result["previews"]["first"] >= 1  # a first preview, then a live one
    controls = result["previews"]["controls"]
    assert controls["input-periodic_prompt"] == "2" and controls["input-upper_codebook_mask"] == "2"

    values = {k: int(v) if isinstance(v, str) else v for k, v in preview["values"].items()}
    prepared = b64(preview["prepared"], np.float32)
    session = ort.InferenceSession(str(tiny.path), providers=["CPUExecutionProvider"])
    full = dict(zip(OUTPUTS, session.run(OUTPUTS, interface_feeds(prepared[None, :], **values))))
    mask = b64(preview["mask"]["data"], np.int64).reshape(preview["mask"]["dims"])
    np.testing.assert_array_equal(mask, full["mask_out"])
    assert (mask[0, 2:] == 1).all() and (mask[0, :2] == 0).any()

    python = mask_preview(Model(tiny.path), prepared, values)
    assert preview["onsets"] == python.onsets and preview["beats"] == python.beats
    assert preview["kept_pixels"] > 0 and preview["generated_pixels"] > preview["kept_pixels"]
    assert (preview["onset_pixels"] > 0) == bool(python.onsets)
    assert "% of the tokens kept" in preview["status"]


def test_cancel_stops_the_run_and_reloads_the_model(page):
    result = page["cancel"]
    assert result["state"] == "ready" and result["error"] is None, result
    assert result["ticks"] == ["cancelled", False]  # the run button works again
    assert "outputs" not in result  # no result from the cancelled run


def test_the_page_opens_a_model_with_external_data(page):
    result = page["external data"]
    assert result["state"] == "ready" and result["error"] is None, result
    assert result["notice"] is None  # a model opened from a file is not called the demo
    assert re.match(r"external\.onnx: 0\.01 GB, \d+ inputs, 14 codebooks", result["model"]), result["model"]


def test_the_page_vamps_with_the_int8_variant(page, build_variant):
    """onnxruntime-web runs opset 21's blocked DequantizeLinear and the int8 MatMuls: the same input
    codes as Python onnxruntime, and generated tokens that mostly agree with its (79 % measured: the
    wasm build dequantizes and multiplies in float where onnxruntime fuses into MatMulNBits, so the
    logits round differently, and one flipped token re-orders the re-masking after it)."""
    result = page["int8"]
    assert result["state"] == "done" and result["error"] is None, result
    assert result["model"].startswith("vampnet.onnx: ") and "14 codebooks" in result["model"], result["model"]
    values = {k: int(v) if isinstance(v, str) else v for k, v in result["values"].items()}
    session = ort.InferenceSession(str(build_variant("tiny:int8").path), providers=["CPUExecutionProvider"])
    prepared = b64(result["prepared"], np.float32)
    want = dict(zip(OUTPUTS, session.run(OUTPUTS, interface_feeds(prepared[None, :], **values))))
    got = {name: b64(o["data"], np.float32 if o["type"] == "float32" else np.int64).reshape(o["dims"])
           for name, o in result["outputs"].items()}
    np.testing.assert_array_equal(got["codes"], want["codes"])
    generated = want["mask_out"] == 1
    assert (got["codes_out"] == want["codes_out"])[generated].mean() >= 0.5
    assert np.isfinite(got["audio_out"]).all() and np.any(got["audio_out"])


def test_the_web_variant_opens_as_built_and_vamps_like_python_onnxruntime(page, servers, web_variant):
    """`--weights web` keeps its int8 weights in the main graph, so onnxruntime-web finds them in the
    .data file `build` writes: opened by address as written, it gives Python onnxruntime's input
    codes and mask, and nearly its generated tokens. MatMulInteger's products are exact in both,
    but the float work before each run-time quantization (norms, attention) rounds differently in
    wasm and in native kernels, which moves an activation across a rounding step now and then:
    identical codes on an AVX-512 EPYC, 18 of 812 output tokens different on an AVX2-only one.
    `?threads=1` holds the page to one thread."""
    result = page["web variant"]
    assert result["state"] == "done" and result["error"] is None, result
    assert result["runtime"] == {"backend": "wasm", "threads": 1, "isolated": True}, result["runtime"]
    url = f"{servers['isolated']}/artifacts/demo/web/vampnet.onnx"
    assert url in result["requests"] and f"{url}.data" in result["requests"], result["requests"]
    got, want = page_outputs(result), python_outputs(web_variant[0], result)
    for name in ("codes", "mask_out"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    generated = want["mask_out"] == 1
    for name in ("coarse_codes", "codes_out"):
        assert (got[name] == want[name])[generated].mean() >= 0.9, name
    assert np.isfinite(got["audio_out"]).all() and np.any(got["audio_out"])


def test_a_model_opened_by_address_is_kept_and_opened_again_without_a_request(page, servers):
    """Downloaded with its .data file (progress in MB), kept in Cache Storage; the next visit opens it
    with no request for either file, and the kept model can be removed."""
    url = f"{servers['isolated']}/artifacts/demo/external.onnx"
    first, again = page["by address"], page["by address again"]
    for result in (first, again):
        assert result["state"] == "ready" and result["error"] is None, result
        assert re.match(r"external\.onnx.*: 0\.01 GB, \d+ inputs, 14 codebooks", result["model"]), result["model"]
    assert url in first["requests"] and f"{url}.data" in first["requests"], first["requests"]
    assert re.fullmatch(r"downloaded external\.onnx: [\d.]+ MB, kept in this browser", first["download"])
    assert [r for r in again["requests"] if r.startswith(url)] == [], again["requests"]
    assert "(from this browser's cache)" in again["model"] and "nothing downloaded" in again["download"]
    assert len(again["cached"]["before"]) == 1 and again["cached"]["before"][0].startswith(url)
    assert again["cached"]["after"] == []


@pytest.mark.parametrize("scenario, expected", [
    ("bad model", "cannot load the model bad.onnx: "),
    ("bad audio", "cannot use bad.wav as audio: not an audio file this browser can decode"),
    ("too large", "cannot load big.onnx: the model (5.37 GB) does not fit in the browser's memory"),
    # onnxruntime-web reads no external data of a Loop body's initializers
    ("int8 with its .data", "cannot load int8-external.onnx: it keeps weights of its loops in its .data file"),
])
def test_the_page_reports_errors_on_one_line(page, scenario, expected):
    result = page[scenario]
    assert result["state"] == "error"
    assert result["error"].startswith(expected), result["error"]
    assert "\n" not in result["error"]
    assert result["bodyText"] > 300  # the page is still there
    assert not [line for line in result["log"] if line.startswith("pageerror")], result["log"]


# ------------------------------------------------------------------------------ mono and back


def audio_signals() -> dict[str, np.ndarray]:
    """(frames, channels): mono, stereo, five channels, and one whose restored output peaks above 1."""
    rng = np.random.default_rng(1)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    return {
        "mono": 0.1 * rng.standard_normal((SAMPLE_RATE // 2, 1)),
        "stereo": np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.05 * rng.standard_normal(t.size)], axis=1),
        "five channels": 0.05 * rng.standard_normal((1000, 5)),
        "loud": 0.9 * np.sin(2 * np.pi * 60 * t)[:, None],
    }


def test_js_mono_and_restore_match_the_python_host(tmp_path):
    signals = audio_signals()
    manifest = []
    for k, (name, x) in enumerate(signals.items()):
        (tmp_path / f"{k}.bin").write_bytes(np.ascontiguousarray(x.T, "<f8").tobytes())
        manifest.append({"name": name, "channels": x.shape[1], "frames": x.shape[0], "file": f"{k}.bin"})
    (tmp_path / "signals.json").write_text(json.dumps(manifest))
    run([node(), str(HERE / "mono.mjs"), str(tmp_path)], timeout=120)
    js = json.loads((tmp_path / "mono.json").read_text())
    for name, x in signals.items():
        mono = x.mean(axis=1).astype(np.float32)  # vampnet_onnx.audio.load_audio's mix
        np.testing.assert_allclose(np.float32(js[name]["mono"]), mono, rtol=1e-6, atol=1e-9, err_msg=name)
        ref = PreparedAudio(mono, SAMPLE_RATE, x.shape[0], x.shape[1], None, None, Path(name))
        want = restore((3 * mono)[None], ref)[0]
        np.testing.assert_allclose(np.float32(js[name]["restored"]).T, want, rtol=1e-6, atol=1e-9, err_msg=name)


# ------------------------------------------------------------------------------ the command


def test_web_command_serves_the_page_without_torch():
    blocked = ("torch", "onnx", "onnxscript", "builder", "graphs", "matplotlib", "ray")
    vendored_runtime()
    proc = subprocess.Popen([sys.executable, "-c", runtime_only(blocked), "web", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving the page at http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[4]
        root = url.removesuffix("/web/")
        for path, mime in (("web/", "text/html"), ("web/app.mjs", "text/javascript"),
                           ("web/vendor/ort-wasm-simd-threaded.wasm", "application/wasm")):
            with urllib.request.urlopen(f"{root}/{path}") as response:
                assert response.headers["Content-Type"].startswith(mime), path
        with urllib.request.urlopen(f"{root}/") as response:  # redirected to the page
            assert response.url == url
        for outside in ("pyproject.toml", "web/../pyproject.toml", "artifacts/"):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(f"{root}/{outside}")
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    assert rc == 128 + signal.SIGTERM  # interrupted cleanly; 98/99: torch or a blocked module loaded


def test_the_browser_keeps_served_files_and_checks_them_at_every_use(tmp_path):
    """A second visit gets 304 for an unchanged file (onnxruntime-web's 14 MB are not sent again);
    a rebuilt model is sent at once."""
    vendored_runtime()
    model = tmp_path / "vampnet.onnx"
    model.write_bytes(b"one")
    server = web.make_server("127.0.0.1", 0, demo=tmp_path)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = f"http://127.0.0.1:{server.server_address[1]}"

    def get(path, tag=None):
        request = urllib.request.Request(f"{root}/{path}", headers={"If-None-Match": tag} if tag else {})
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:  # urllib raises on 304
            return e.code, e.headers, e.read()

    try:
        for path in ("web/vendor/ort-wasm-simd-threaded.wasm", "artifacts/demo/vampnet.onnx"):
            status, headers, body = get(path)
            assert status == 200 and headers["Cache-Control"] == "no-cache" and body, path
            assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            tag = headers["ETag"]
            status, headers, body = get(path, tag)
            assert (status, body, headers["ETag"]) == (304, b"", tag), path
        os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 1))  # rebuilt
        status, headers, body = get("artifacts/demo/vampnet.onnx", tag)
        assert status == 200 and body == b"one" and headers["ETag"] != tag
    finally:
        server.shutdown()
        server.server_close()


def test_web_command_says_how_to_vendor_the_runtime(tmp_path, monkeypatch):
    shutil.copy(web.WEB / "package.json", tmp_path / "package.json")
    assert "missing" in web.runtime_problem(tmp_path)
    monkeypatch.setattr(web, "WEB", tmp_path)
    from vampnet_onnx.errors import UsageError

    with pytest.raises(UsageError, match=r"run `npm ci --prefix web`"):
        web.make_server("127.0.0.1", 0)
