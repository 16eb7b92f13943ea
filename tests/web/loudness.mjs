// The page's loudness normaliser (web/audio.mjs) on signals from tests/test_web.py.
//
//   node loudness.mjs DIR
//
// DIR/signals.json lists {name, rate, channels, frames, file} (file: float64 little-endian,
// channel after channel). Writes DIR/loudness.json: per signal, the loudness of its channels,
// the gain the page applies to make the model's input, and the gain its output gets back.
import fs from "node:fs";
import path from "node:path";
import { loudness, prepareAudio, restoreAudio } from "../../web/audio.mjs";

const dir = process.argv[2];
const results = {};
for (const s of JSON.parse(fs.readFileSync(path.join(dir, "signals.json"), "utf8"))) {
  const bytes = fs.readFileSync(path.join(dir, s.file));
  const all = new Float64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const channels = Array.from({ length: s.channels }, (_, c) => all.subarray(c * s.frames, (c + 1) * s.frames));
  const prepared = prepareAudio(channels, s.rate);
  // the output: the model's input at half level, restored to the input's loudness
  const half = prepared.samples.map((v) => v / 2);
  const restored = restoreAudio(half, s.frames, s.channels, prepared.loudness, s.rate);
  const i = half.findIndex((v) => v !== 0);
  results[s.name] = {
    loudness: loudness(channels, s.rate),
    gain: prepared.gain,
    restore_gain: restored[0][i] / half[i],
  };
}
fs.writeFileSync(path.join(dir, "loudness.json"), JSON.stringify(results));
