// Copy the parts of onnxruntime-web the page loads into vendor/ (run by `npm ci` as postinstall).
// Each bundle has the wasm loader built in; it finds its .wasm file beside itself. The WebGPU
// bundle (with its asyncify wasm) is loaded only where the browser has a GPU adapter.
import fs from "node:fs";

const dist = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url);
const vendor = new URL("./vendor/", import.meta.url);
fs.rmSync(vendor, { recursive: true, force: true });
fs.mkdirSync(vendor);
for (const name of ["ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm",
                    "ort.webgpu.bundle.min.mjs", "ort-wasm-simd-threaded.asyncify.wasm"]) {
  fs.copyFileSync(new URL(name, dist), new URL(name, vendor));
}
// what tests and `vampnet-onnx web` check against web/package.json
const version = JSON.parse(fs.readFileSync(new URL("../package.json", dist))).version;
fs.writeFileSync(new URL("VERSION", vendor), version + "\n");
console.log(`onnxruntime-web copied to ${vendor.pathname}`);
