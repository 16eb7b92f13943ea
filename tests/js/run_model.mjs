// Run a vampnet-onnx model in onnxruntime-node or onnxruntime-web (its wasm backend, in Node).
//
//   node run_model.mjs node|web MODEL DIR
//
// DIR/inputs.json lists the inputs ({name, dtype, shape, file}); each file holds the raw
// little-endian values. The outputs are written the same way, as DIR/outputs.json and raw files.
import fs from "node:fs";
import path from "node:path";

const [backend, modelPath, dir] = process.argv.slice(2);
const ort = backend === "web" ? await import("onnxruntime-web") : await import("onnxruntime-node");
if (backend === "web") ort.env.wasm.numThreads = 1;

const ARRAYS = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array };

function readTensor({ name, dtype, shape, file }) {
  const bytes = fs.readFileSync(path.join(dir, file));
  const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength); // aligned
  return [name, new ort.Tensor(dtype, new ARRAYS[dtype](copy), shape)];
}

const manifest = JSON.parse(fs.readFileSync(path.join(dir, "inputs.json"), "utf8"));
const feeds = Object.fromEntries(manifest.map(readTensor));
const model = backend === "web" ? fs.readFileSync(modelPath) : modelPath;
const session = await ort.InferenceSession.create(model, {
  executionProviders: [backend === "web" ? "wasm" : "cpu"],
});
const missing = session.inputNames.filter((name) => !(name in feeds));
if (missing.length) throw new Error(`inputs not fed: ${missing.join(", ")}`);
const results = await session.run(feeds);
const written = [];
for (const name of session.outputNames) {
  const tensor = results[name];
  const file = `out_${name}.bin`;
  fs.writeFileSync(path.join(dir, file), Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength));
  written.push({ name, dtype: tensor.type, shape: tensor.dims, file });
}
fs.writeFileSync(path.join(dir, "outputs.json"), JSON.stringify({ inputs: session.inputNames, outputs: written }));
