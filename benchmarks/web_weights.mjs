// One model in onnxruntime-web's wasm build under Node (benchmarks/web_weights.py): opens it with
// its .data file (when there is one) as the page does, runs it once on X (M × K ones), and prints
// JSON: the peak RSS above the start for the load and for load and run, the run's seconds, or the
// error that stopped it.
//
//   node web_weights.mjs ORT_BUNDLE MODEL.onnx M K
import fs from "node:fs";

const [bundle, model, m, k] = process.argv.slice(2);
const ort = await import(bundle);
ort.env.wasm.numThreads = 1;
const start = process.memoryUsage().rss;
// the high-water mark of this process image (not getrusage's, which keeps the parent's across exec)
const peak = () => Number(fs.readFileSync("/proc/self/status", "utf8").match(/VmHWM:\s+(\d+)/)[1]) * 1024 - start;
const data = `${model}.data`;
const options = fs.existsSync(data)
  ? { externalData: [{ path: model.split("/").pop() + ".data", data: new Uint8Array(fs.readFileSync(data)) }] } : {};
try {
  const session = await ort.InferenceSession.create(new Uint8Array(fs.readFileSync(model)), options);
  const loaded = peak();
  const t = performance.now();
  await session.run({ x: new ort.Tensor("float32", new Float32Array(m * k).fill(1), [Number(m), Number(k)]) });
  console.log(JSON.stringify({ load_peak: loaded, peak: peak(), run_s: (performance.now() - t) / 1000 }));
} catch (e) {
  console.log(JSON.stringify({ error: String(e?.message ?? e).split("\n")[0] }));
}
