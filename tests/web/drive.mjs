// Drive the page in headless Chromium (puppeteer-core) through a list of scenarios, one browser
// for all of them (tests/test_web.py).
//
//   node drive.mjs CHROMIUM URL SCENARIOS.json RESULTS.json
//
// A scenario: {name, model?: [files], audio?: file, values?: {input: value}, run?: bool,
// cancel?: bool (start a run and cancel it), screenshot?: file}. Its result: the page's state, error and notice lines, and after a run the
// page's preprocessed audio, its outputs, the downloaded WAV and the canvas's pixels in numbers.
import fs from "node:fs";
import puppeteer from "puppeteer-core";

const [chromium, url, scenariosFile, resultsFile] = process.argv.slice(2);
const scenarios = JSON.parse(fs.readFileSync(scenariosFile, "utf8"));
const TIMEOUT = 300_000;

const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});

const settled = (page, states) =>
  page.waitForFunction((s) => s.includes(document.body.dataset.state), { timeout: TIMEOUT, polling: 100 }, states);

async function runScenario(page, scenario) {
  const log = [];
  page.on("console", (m) => log.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => log.push(`pageerror: ${e.message}`));
  await page.goto(url);
  await settled(page, ["ready", "error"]);
  if (scenario.model) {
    await (await page.$("#model-file")).uploadFile(...scenario.model);
    await page.waitForFunction(() => document.body.dataset.state !== "ready", { timeout: 10_000 }).catch(() => {});
    await settled(page, ["ready", "error"]);
  }
  if (scenario.audio) {
    const before = await page.$eval("#audio-status", (e) => e.textContent);
    await (await page.$("#audio-file")).uploadFile(scenario.audio);
    await page.waitForFunction((b) => {
      const text = document.getElementById("audio-status").textContent;
      return text !== b && !text.startsWith("decoding");
    }, { timeout: TIMEOUT }, before);
  }
  for (const [name, value] of Object.entries(scenario.values ?? {})) {
    await page.$eval(`#input-${name}`, (e, v) => { e.value = v; }, String(value));
  }
  let ticks = [];
  if (scenario.run) {
    await page.click("#run");
    // the page stays responsive while the worker runs: the elapsed time keeps changing
    for (let i = 0; i < 5; i++) {
      ticks.push(await page.$eval("#run-status", (e) => e.textContent));
      await new Promise((r) => setTimeout(r, 150));
    }
    await settled(page, ["done", "error"]);
  }
  if (scenario.cancel) {
    await page.click("#run");
    await settled(page, ["running"]);
    await page.click("#cancel");
    await page.waitForFunction(() => document.body.dataset.state !== "running", { timeout: 10_000 });
    await settled(page, ["ready", "error"]); // the model is loaded again in a new worker
    ticks = [await page.$eval("#run-status", (e) => e.textContent), await page.$eval("#run", (e) => e.disabled)];
  }
  const result = await page.evaluate(async () => {
    const b64 = (view) => {
      const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
      let s = "";
      for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
      return btoa(s);
    };
    const text = (id) => (document.getElementById(id).hidden ? null : document.getElementById(id).textContent);
    const out = { state: document.body.dataset.state, error: text("error"), notice: text("notice"),
      model: text("model-status"),
      bodyText: document.body.innerText.length };
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
    }
    return out;
  });
  result.ticks = ticks;
  result.log = log;
  if (scenario.screenshot) {
    await page.setViewport({ width: 1000, height: 1000 });
    await page.screenshot({ path: scenario.screenshot, fullPage: true });
  }
  return result;
}

const results = {};
try {
  for (const scenario of scenarios) {
    const page = await browser.newPage();
    try {
      results[scenario.name] = await runScenario(page, scenario);
    } catch (e) {
      results[scenario.name] = { failure: String(e?.stack ?? e) };
    }
    await page.close();
  }
} finally {
  await browser.close();
}
fs.writeFileSync(resultsFile, JSON.stringify(results));
