// The page's audio handling (web/audio.mjs) on signals from tests/test_web.py.
//
//   node mono.mjs DIR
//
// DIR/signals.json lists {name, channels, frames, file} (file: float64 little-endian, channel
// after channel). Writes DIR/mono.json: per signal, the page's mono mix and its restored output
// (the mix times 3, restored to the input's frames and channels: the peak limit) as arrays.
import fs from "node:fs";
import path from "node:path";
import { prepareAudio, restoreAudio } from "../../web/audio.mjs";

const dir = process.argv[2];
const results = {};
for (const s of JSON.parse(fs.readFileSync(path.join(dir, "signals.json"), "utf8"))) {
  const bytes = fs.readFileSync(path.join(dir, s.file));
  const all = new Float64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const channels = Array.from({ length: s.channels }, (_, c) => all.subarray(c * s.frames, (c + 1) * s.frames));
  const mono = prepareAudio(channels);
  const restored = restoreAudio(mono.map((v) => 3 * v), s.frames, s.channels);
  results[s.name] = { mono: Array.from(mono), restored: restored.map((c) => Array.from(c)) };
}
fs.writeFileSync(path.join(dir, "mono.json"), JSON.stringify(results));
