// Drive the page in headless Chromium (puppeteer-core) through a list of scenarios, one browser
// for all of them (tests/test_web.py).
//
//   node drive.mjs CHROMIUM URL SCENARIOS.json RESULTS.json
//
// A scenario: {name, model?: [files], audio?: file, values?: {input: value}, run?: bool,
// cancel?: bool (start a run and cancel it), preview?: {preset?, values?, expect} (wait for the
// first mask preview, pick the preset, type the values, wait for the preview whose values include
// `expect`), screenshot?: file, idle_ms?: wait before opening the model, timeout_s?: for each
// step (300), url?: the page's address (default: URL), browser?: "webgpu" (a second Chromium
// with its software WebGPU adapter; the default one has no GPU), open_url?: a model's address
// to open (instead of `model`), remove_cached?: click the first kept model's remove button,
// again?: {name, values} (after the run, type these values and run again in the same session;
// its result is `name`'s), network?: {mbit, latency_ms} (the page's requests throttled to that
// link, as Chromium's developer tools do)}. The
// result lists every request the page made (`requests`). Its result: the page's state, error and notice lines,
// the times (ms since the epoch) at which each step began and ended, and after a run the page's
// preprocessed audio, its outputs, the downloaded WAV and the canvas's pixels in numbers. A model
// that does not open ends the scenario there (its error line is the result).
import fs from "node:fs";
import puppeteer from "puppeteer-core";

const [chromium, url, scenariosFile, resultsFile] = process.argv.slice(2);
const scenarios = JSON.parse(fs.readFileSync(scenariosFile, "utf8"));
const TIMEOUT = 300_000;

// Chromium's flags: without a GPU, or with the software WebGPU adapter (SwiftShader's Vulkan)
const FLAGS = {
  default: ["--disable-gpu"],
  webgpu: ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-angle=swiftshader",
           "--use-webgpu-adapter=swiftshader"],
};
const browsers = {};
const browserFor = async (kind = "default") => (browsers[kind] ??= await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  // one wait is one protocol call: it must outlast the longest step (puppeteer's default: 180 s)
  protocolTimeout: Math.max(3 * TIMEOUT, ...scenarios.map((s) => 2 * (s.timeout_s ?? 0) * 1000)),
  args: ["--no-sandbox", "--disable-dev-shm-usage", ...FLAGS[kind]],
}));

const settled = (page, states, timeout = TIMEOUT) =>
  page.waitForFunction((s) => s.includes(document.body.dataset.state), { timeout, polling: 100 }, states);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// the page's state, its outputs, and pictures in numbers, after a scenario
const pageResult = (page) => page.evaluate(async () => {
  const b64 = (view) => {
    const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s);
  };
  const text = (id) => (document.getElementById(id).hidden ? null : document.getElementById(id).textContent);
  const out = { state: document.body.dataset.state, error: text("error"), notice: text("notice"),
    model: text("model-status"), backend: text("backend-status"), runtime: window.vampnet.runtime, load_ms: window.vampnet.loadMs, cores: navigator.hardwareConcurrency,
    bodyText: document.body.innerText.length };
  const p = window.vampnet.preview;
  if (p) {
    const canvas = document.getElementById("mask-preview");
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    const count = (rgb) => {
      let n = 0;
      for (let i = 0; i < pixels.length; i += 4) n += pixels[i] === rgb[0] && pixels[i + 1] === rgb[1] && pixels[i + 2] === rgb[2];
      return n;
    };
    out.preview = { mask: { dims: p.mask.dims, data: b64(p.mask.data) }, onsets: p.onsets, beats: p.beats,
      values: p.values, serial: p.serial, ms: p.ms, prepared: b64(window.vampnet.prepared),
      status: document.getElementById("preview-status").textContent,
      kept_pixels: count([0x1f, 0x5f, 0xa8]), generated_pixels: count([0xf2, 0xb2, 0x5c]),
      onset_pixels: count([0x11, 0x11, 0x11]) };
  }
  const r = window.vampnet.result;
  if (r) {
    out.prepared = b64(window.vampnet.prepared);
    out.values = r.values;
    out.rows = r.rows;
    out.outputs = Object.fromEntries(Object.entries(r.outputs).map(([k, t]) => [k, { type: t.type, dims: t.dims, data: b64(t.data) }]));
    const wav = await (await fetch(window.vampnet.outputUrls[0])).arrayBuffer();
    out.wav = b64(new Uint8Array(wav));
    const canvas = document.getElementById("codes");
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    const colours = new Set();
    let inked = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      colours.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
      if (pixels[i] + pixels[i + 1] + pixels[i + 2] < 600) inked++;
    }
    out.canvas = { width: canvas.width, height: canvas.height, colours: colours.size, inked: inked / (pixels.length / 4) };
    out.eta = window.vampnet.eta;
    out.status = document.getElementById("run-status").textContent;
    const waves = document.getElementById("waveforms");
    const wp = waves.getContext("2d").getImageData(0, 0, waves.width, waves.height).data;
    const count = (rgb) => {
      let n = 0;
      for (let i = 0; i < wp.length; i += 4) n += wp[i] === rgb[0] && wp[i + 1] === rgb[1] && wp[i + 2] === rgb[2];
      return n;
    };
    out.waveforms = { hidden: waves.hidden, width: waves.width, height: waves.height,
      wave: count([0x33, 0x33, 0x33]), kept: count([0xcf, 0xe0, 0xf5]), white: count([255, 255, 255]) };
  }
  return out;
});

async function runScenario(page, scenario, log) {
  page.on("console", (m) => log.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => log.push(`pageerror: ${e.message}`));
  const timeout = (scenario.timeout_s ?? TIMEOUT / 1000) * 1000;
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  if (scenario.network) {
    const bytes = (scenario.network.mbit * 1e6) / 8;
    await page.emulateNetworkConditions({ download: bytes, upload: bytes, latency: scenario.network.latency_ms ?? 0 });
  }
  await page.goto(scenario.url ?? url);
  await settled(page, ["ready", "error"]);
  const times = { page: Date.now() };
  let opened = true;
  if (scenario.model) {
    await sleep(scenario.idle_ms ?? 0);
    times.model = Date.now();
    await (await page.$("#model-file")).uploadFile(...scenario.model);
    await page.waitForFunction(() => document.body.dataset.state !== "ready", { timeout: 10_000 }).catch(() => {});
    await settled(page, ["ready", "error"], timeout);
    times.loaded = Date.now();
    opened = (await page.evaluate(() => document.body.dataset.state)) === "ready";
  }
  if (scenario.open_url) {
    await sleep(scenario.idle_ms ?? 0);
    times.model = Date.now();
    await page.$eval("#model-url", (e, v) => { e.value = v; }, scenario.open_url);
    await page.click("#url-form button");
    await page.waitForFunction(() => document.body.dataset.state !== "ready", { timeout: 10_000 }).catch(() => {});
    await settled(page, ["ready", "error"], timeout);
    times.loaded = Date.now();
    opened = (await page.evaluate(() => document.body.dataset.state)) === "ready";
  }
  let cached = null;
  if (scenario.remove_cached) {
    const listed = () => page.$$eval("#cached-list li", (es) => es.map((e) => e.textContent));
    cached = { before: await listed() };
    await page.click("#cached-list .remove");
    await page.waitForFunction(() => document.getElementById("cached").hidden, { timeout: 10_000 });
    cached.after = await listed();
  }
  if (scenario.audio && opened) {
    const before = await page.$eval("#audio-status", (e) => e.textContent);
    await (await page.$("#audio-file")).uploadFile(scenario.audio);
    await page.waitForFunction((b) => {
      const text = document.getElementById("audio-status").textContent;
      return text !== b && !text.startsWith("decoding");
    }, { timeout }, before);
  }
  for (const [name, value] of Object.entries(opened ? scenario.values ?? {} : {})) {
    await page.$eval(`#input-${name}`, (e, v) => { e.value = v; }, String(value));
  }
  let previews = null;
  if (scenario.preview && opened) {
    const shown = (want) => page.waitForFunction((w) => {
      const p = window.vampnet.preview;
      return document.body.dataset.preview === "shown" && p &&
        Object.entries(w).every(([k, v]) => String(p.values[k]) === String(v));
    }, { timeout, polling: 100 }, want);
    await shown({});
    const first = await page.evaluate(() => window.vampnet.preview.serial);
    if (scenario.preview.preset) await page.select("#preset", scenario.preview.preset);
    for (const [name, value] of Object.entries(scenario.preview.values ?? {})) {
      await page.$eval(`#input-${name}`, (e, v) => {
        e.value = v;
        e.dispatchEvent(new Event("input", { bubbles: true }));
      }, String(value));
    }
    await shown(scenario.preview.expect);
    previews = { first, controls: await page.$$eval("#controls input", (es) => Object.fromEntries(es.map((e) => [e.id, e.value]))) };
  }
  let ticks = [];
  if (scenario.run && opened) {
    times.run = Date.now();
    await page.click("#run");
    // the page stays responsive while the worker runs: the elapsed time keeps changing
    for (let i = 0; i < 5; i++) {
      ticks.push(await page.$eval("#run-status", (e) => e.textContent));
      await sleep(150);
    }
    await settled(page, ["done", "error"], timeout);
    times.ran = Date.now();
  }
  if (scenario.cancel && opened) {
    await page.click("#run");
    await settled(page, ["running"]);
    await page.click("#cancel");
    await page.waitForFunction(() => document.body.dataset.state !== "running", { timeout: 10_000 });
    await settled(page, ["ready", "error"]); // the model is loaded again in a new worker
    ticks = [await page.$eval("#run-status", (e) => e.textContent), await page.$eval("#run", (e) => e.disabled)];
  }
  const result = await pageResult(page);
  result.times = times;
  result.requests = requests;
  result.download = await page.$eval("#download-status", (e) => e.textContent);
  if (cached) result.cached = cached;
  result.ticks = ticks;
  if (previews) result.previews = previews;
  result.log = log;
  if (scenario.screenshot) {
    await page.setViewport({ width: 1000, height: 1000 });
    await page.screenshot({ path: scenario.screenshot, fullPage: true });
  }
  return result;
}

// A second run on the same page and session with `again.values` typed over the first's.
async function runAgain(page, scenario, log) {
  const timeout = (scenario.timeout_s ?? TIMEOUT / 1000) * 1000;
  for (const [name, value] of Object.entries(scenario.again.values)) {
    await page.$eval(`#input-${name}`, (e, v) => { e.value = v; }, String(value));
  }
  const times = { run: Date.now() };
  await page.click("#run");
  await page.waitForFunction(() => document.body.dataset.state !== "done", { timeout: 10_000 }).catch(() => {});
  await settled(page, ["done", "error"], timeout);
  times.ran = Date.now();
  return { ...(await pageResult(page)), times, log: [...log] };
}

const results = {};
try {
  for (const scenario of scenarios) {
    const page = await (await browserFor(scenario.browser)).newPage();
    const log = [];
    try {
      results[scenario.name] = await runScenario(page, scenario, log);
      if (scenario.again) results[scenario.again.name] = await runAgain(page, scenario, log);
    } catch (e) {
      const status = await page.evaluate(() => document.body.innerText.slice(0, 2000)).catch(() => "");
      results[scenario.name] = { failure: `${e?.stack ?? e}\nthe page: ${status}\nits log: ${log.join("\n")}` };
    }
    await page.close();
  }
} finally {
  for (const browser of Object.values(browsers)) await browser.close();
}
fs.writeFileSync(resultsFile, JSON.stringify(results));
