// The page's audio handling, written to match the Python host (vampnet_onnx/audio.py) exactly:
// loudness by ITU-R BS.1770 as pyloudnorm 0.2.0 measures it (K-weighting, 400 ms blocks with 75 %
// overlap, gates at -70 LUFS and -10 LU), audiotools-style (signals shorter than 0.5 s padded to
// 0.5 s, the end zero-padded so every sample lies in a block, clamped below at -70 LUFS).
// No DOM here, so Node runs it too (the tests compare it with the Python host).

export const SAMPLE_RATE = 44100;
export const TARGET_LUFS = -24.0;
export const MIN_LUFS = -70.0;
const MIN_MEASURE_S = 0.5;
const CHANNEL_GAINS = [1.0, 1.0, 1.0, 1.41, 1.41]; // pyloudnorm's, for up to five channels

// pyloudnorm's IIRfilter coefficients (RBJ cookbook), normalised by a0 as scipy's lfilter does.
function biquad(G, Q, fc, rate, type) {
  const A = 10 ** (G / 40.0);
  const w0 = 2.0 * Math.PI * (fc / rate);
  const alpha = Math.sin(w0) / (2.0 * Q);
  const cos = Math.cos(w0);
  let b, a;
  if (type === "high_shelf") {
    const s = 2 * Math.sqrt(A) * alpha;
    b = [A * ((A + 1) + (A - 1) * cos + s), -2 * A * ((A - 1) + (A + 1) * cos), A * ((A + 1) + (A - 1) * cos - s)];
    a = [(A + 1) - (A - 1) * cos + s, 2 * ((A - 1) - (A + 1) * cos), (A + 1) - (A - 1) * cos - s];
  } else {
    b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2];
    a = [1 + alpha, -2 * cos, 1 - alpha];
  }
  return { b: b.map((v) => v / a[0]), a: a.map((v) => v / a[0]) };
}

// Direct form II transposed, as scipy.signal.lfilter, in float64.
function lfilter({ b, a }, x) {
  const y = new Float64Array(x.length);
  let z1 = 0, z2 = 0;
  for (let n = 0; n < x.length; n++) {
    const xn = x[n];
    const yn = b[0] * xn + z1;
    z1 = b[1] * xn - a[1] * yn + z2;
    z2 = b[2] * xn - a[2] * yn;
    y[n] = yn;
  }
  return y;
}

// numpy's round (half to even), for pyloudnorm's block count.
function roundHalfEven(v) {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// pyloudnorm's Meter.integrated_loudness on equally long channels (Float32Array/Float64Array).
function integratedLoudness(channels, rate) {
  const shelf = biquad(4.0, 1 / Math.sqrt(2), 1500.0, rate, "high_shelf");
  const highpass = biquad(0.0, 0.5, 38.0, rate, "high_pass");
  const filtered = channels.map((x) => lfilter(highpass, lfilter(shelf, x)));
  const Tg = 0.4, step = 1.0 - 0.75;
  const nSamples = channels[0].length;
  const T = nSamples / rate;
  const nBlocks = roundHalfEven((T - Tg) / (Tg * step)) + 1;
  const z = filtered.map((x) => {
    const zc = new Float64Array(nBlocks);
    for (let j = 0; j < nBlocks; j++) {
      const lo = Math.trunc(Tg * (j * step) * rate);
      const hi = Math.min(Math.trunc(Tg * (j * step + 1) * rate), x.length);
      let sum = 0;
      for (let i = lo; i < hi; i++) sum += x[i] * x[i];
      zc[j] = (1.0 / (Tg * rate)) * sum;
    }
    return zc;
  });
  const weighted = (j) => z.reduce((s, zc, c) => s + CHANNEL_GAINS[c] * zc[j], 0);
  const blockLoudness = Array.from({ length: nBlocks }, (_, j) => -0.691 + 10.0 * Math.log10(weighted(j)));
  const gatedMean = (keep) => {
    const kept = blockLoudness.map((l, j) => (keep(l) ? j : -1)).filter((j) => j >= 0);
    return z.map((zc) => kept.reduce((s, j) => s + zc[j], 0) / kept.length);
  };
  const loudnessOf = (avg) => -0.691 + 10.0 * Math.log10(avg.reduce((s, v, c) => s + CHANNEL_GAINS[c] * v, 0));
  const relative = loudnessOf(gatedMean((l) => l >= MIN_LUFS)) - 10.0;
  const avg = gatedMean((l) => l > relative && l > MIN_LUFS).map((v) => (Number.isNaN(v) ? 0 : v));
  return loudnessOf(avg);
}

/** Integrated loudness (LUFS) of `channels` (an array of equally long sample arrays), as the
 * Python host's `loudness`: more than five channels are measured on their mono mix. */
export function loudness(channels, rate) {
  if (channels.length > 5) channels = [mix(channels)];
  const n = channels[0].length;
  const block = Math.round(0.4 * rate);
  const hop = Math.round(0.1 * rate);
  let length = Math.max(n, Math.ceil(MIN_MEASURE_S * rate), block);
  length = block + (Math.ceil((length - block) / hop)) * hop; // every sample covered by a block
  const padded = channels.map((x) => {
    const p = new Float64Array(length);
    p.set(x);
    return p;
  });
  if (padded.every((x) => x.every((v) => v === 0))) return MIN_LUFS;
  const value = integratedLoudness(padded, rate);
  return Number.isFinite(value) ? Math.max(value, MIN_LUFS) : MIN_LUFS;
}

/** The mean of the channels (float64). */
export function mix(channels) {
  const out = new Float64Array(channels[0].length);
  for (const x of channels) for (let i = 0; i < x.length; i++) out[i] += x[i];
  for (let i = 0; i < out.length; i++) out[i] /= channels.length;
  return out;
}

const dbToLinear = (db) => 10.0 ** (db / 20.0);

function peakOf(x) {
  let peak = 0;
  for (let i = 0; i < x.length; i++) peak = Math.max(peak, Math.abs(x[i]));
  return peak;
}

/** The model's input from decoded channels at 44.1 kHz: mono (mean of the channels), -24 LUFS,
 * then scaled down to peak <= 1. Returns {samples: Float32Array, loudness: the input's LUFS
 * (measured on its channels, for `restoreAudio`), gain: the linear gain applied}.
 * Throws for silence or non-finite samples. */
export function prepareAudio(channels, rate = SAMPLE_RATE) {
  if (!channels.length || !channels[0].length) throw new Error("the audio has no samples");
  if (channels.some((x) => x.some((v) => !Number.isFinite(v)))) throw new Error("the audio has NaN or infinite samples");
  const inputLoudness = loudness(channels, rate);
  const mono = mix(channels);
  const monoLoudness = loudness([mono], rate);
  if (inputLoudness <= MIN_LUFS || monoLoudness <= MIN_LUFS) {
    throw new Error(`the audio is silent (loudness at or below ${MIN_LUFS} LUFS)`);
  }
  let gain = dbToLinear(TARGET_LUFS - monoLoudness);
  const peak = peakOf(mono) * gain;
  if (peak > 1.0) gain /= peak;
  const samples = Float32Array.from(mono, (v) => v * gain);
  return { samples, loudness: inputLoudness, gain };
}

/** The model's mono output back to the input's shape: `frames` long, `channels` copies, at the
 * input's loudness `targetLoudness` (a silent output stays silent), then peak <= 1. */
export function restoreAudio(out, frames, channels, targetLoudness, rate = SAMPLE_RATE) {
  if (out.some((v) => !Number.isFinite(v))) throw new Error("the model produced NaN or infinite samples");
  const y = new Float64Array(frames);
  y.set(out.length > frames ? out.subarray(0, frames) : out);
  const copies = Array.from({ length: channels }, () => y);
  const lufs = loudness(copies, rate);
  let gain = lufs > MIN_LUFS ? dbToLinear(targetLoudness - lufs) : 1.0;
  const peak = peakOf(y) * gain;
  if (peak > 1.0) gain /= peak;
  return Array.from({ length: channels }, () => Float32Array.from(y, (v) => v * gain));
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
