// The page's audio handling, as the Python host's (vampnet_onnx/audio.py): the model resamples
// and normalises its input itself and hands the output back at the input's rate and loudness
// (docs/preprocessing.md), so the page only mixes the decoded channels to mono and writes WAVs.
// No DOM here, so Node runs it too.

// The rate the page decodes at: the Web Audio API resamples every file to its context's rate
// while decoding (it does not tell the file's own), so the page decodes at VampNet's rate and
// feeds it as `sample_rate`; the model's resampler is then the identity.
export const SAMPLE_RATE = 44100;

/** The model's input from decoded channels: their mean, as upstream's to_mono (Float32Array).
 * Throws for no samples, non-finite samples or silence. */
export function prepareAudio(channels) {
  if (!channels.length || !channels[0].length) throw new Error("the audio has no samples");
  if (channels.some((x) => x.some((v) => !Number.isFinite(v)))) throw new Error("the audio has NaN or infinite samples");
  const samples = new Float32Array(channels[0].length);
  const sum = new Float64Array(channels[0].length);
  for (const x of channels) for (let i = 0; i < x.length; i++) sum[i] += x[i];
  for (let i = 0; i < sum.length; i++) samples[i] = sum[i] / channels.length;
  if (samples.every((v) => v === 0)) throw new Error("the audio is silent (its mix to mono is all zeros)");
  return samples;
}

/** The model's mono output (already at the input's rate and loudness) in the input's shape:
 * `frames` long, `channels` copies, scaled down to peak 1 if it exceeds it. */
export function restoreAudio(out, frames, channels) {
  if (out.some((v) => !Number.isFinite(v))) throw new Error("the model produced NaN or infinite samples");
  const y = new Float32Array(frames);
  y.set(out.length > frames ? out.subarray(0, frames) : out);
  let peak = 0;
  for (let i = 0; i < y.length; i++) peak = Math.max(peak, Math.abs(y[i]));
  if (peak > 1.0) for (let i = 0; i < y.length; i++) y[i] /= peak;
  return Array.from({ length: channels }, () => y);
}

/** A 32-bit float WAV file (interleaved channels) as an ArrayBuffer. */
export function encodeWav(channels, rate = SAMPLE_RATE) {
  const n = channels[0].length, c = channels.length;
  const bytes = n * c * 4;
  const view = new DataView(new ArrayBuffer(44 + bytes));
  const text = (offset, s) => [...s].forEach((ch, i) => view.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + bytes, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 3, true); // IEEE float
  view.setUint16(22, c, true);
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * c * 4, true);
  view.setUint16(32, c * 4, true);
  view.setUint16(34, 32, true);
  text(36, "data");
  view.setUint32(40, bytes, true);
  for (let i = 0, o = 44; i < n; i++) for (let k = 0; k < c; k++, o += 4) view.setFloat32(o, channels[k][i], true);
  return view.buffer;
}
