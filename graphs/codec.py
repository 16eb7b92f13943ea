"""The codec stages of the single model: encode audio to codes, decode codes to audio, in windows.

The codec's activations are long: its outer layers run at the sample rate with tens of channels, so
coding a whole song at once costs memory in proportion to its length. Both stages therefore run
a Loop over windows of `window` frames: each iteration codes its window plus `overlap` frames either
side and keeps the window's own frames. With `overlap` at least the codec's receptive field
(builder/codec.py, `receptive_field_frames`), every kept frame reads exactly what it reads in a
whole-signal run, so the result equals the whole-signal one to float32 noise, and a short input is
one window.

The encoder appends each window's codes to a loop-carried result (a Concat, grown from an empty
tensor): codes are small. The decoder's audio is not: a grown result is allocated anew each
iteration, and onnxruntime's arena keeps every size it grew through. So each decoder iteration emits
its kept samples as a Loop scan output instead, padded to one size (a scan output stacks its pieces,
which must be equal): `window` frames, or the signal's frames when it is a single window (a short
clip does not decode a whole window). After the Loop, `joined` lays the pieces end to end; the
model cuts the result to its length only once, at its end (`restore`).

Windows start on whole frames, so every strided layer of the encoder sees the same grid as in a
whole-signal run (a frame is the product of its strides). At the ends of the signal a window is
clipped to the signal, so its zero padding there is the whole signal's.

The components are opaque ops of the "vampnet" domain (`vampnet.codec_encoder`,
`vampnet.codec_decoder`), bound by builder/assemble.py to weights in the outer scope.
"""
import onnxscript
from onnxscript import BOOL, FLOAT, INT64, graph

from vampnet_onnx.graphs.opsets import op, vampnet


@onnxscript.script(vampnet, default_opset=op)
def window_span(
    start: INT64[1], window: INT64, overlap: INT64, frames: INT64[1]
) -> tuple[INT64[1], INT64[1], INT64[1]]:
    """The frames [lo, hi) a window reads to keep frames [start, end): `overlap` either side of its
    own, clipped to the signal's [0, frames)."""
    lo = op.Max(start - overlap, 0)
    hi = op.Min(start + window + overlap, frames)
    end = op.Min(start + window, frames)
    return lo, hi, end


@onnxscript.script(vampnet, default_opset=op)
def encode(
    audio: FLOAT["B", "S"], gain: FLOAT["B", 1], hop: INT64, n_codebooks: INT64, window: INT64, overlap: INT64
) -> INT64["B", "K", "T"]:
    """Encode, window by window, the input times `gain` (per row), right-padded with zeros to whole
    hops (at least one, so an empty input still runs). Each window is cut from the input, scaled
    and padded itself, so that neither a scaled nor a padded copy of the whole signal is held."""
    s = op.Shape(audio, start=1, end=2)
    frames = op.Max(op.Div(s + hop - 1, hop), 1)
    batch = op.Shape(audio, start=0, end=1)
    codes = op.Expand(op.Constant(value_int=0), op.Concat(batch, op.Reshape(n_codebooks, [1]), [0], axis=0))
    for i in range(op.Squeeze(op.Div(frames + window - 1, window))):
        start = op.Unsqueeze(i * window, [0])
        lo, hi, end = window_span(start, window, overlap, frames)
        cut = op.Slice(audio, lo * hop, hi * hop, [1]) * gain
        samples = op.Pad(cut, op.Concat([0, 0], [0], (hi - lo) * hop - op.Shape(cut, start=1, end=2), axis=0))
        piece = vampnet.codec_encoder(op.Unsqueeze(samples, [1]))
        codes = op.Concat(codes, op.Slice(piece, start - lo, end - lo, [2]), axis=2)
    return codes


@onnxscript.script(vampnet, default_opset=op)
def joined(pieces: FLOAT["W", "B", "N"], batch: INT64[1]) -> FLOAT["B", "S"]:
    """Loop scan outputs, W pieces of (B, N), end to end: (B, W·N). The first Reshape takes both
    onnxruntime's stack (W, B, N) and the ONNX reference evaluator's concatenation (W·B, N)."""
    n = op.Shape(pieces, start=-1)
    stacked = op.Reshape(pieces, op.Concat(op.Constant(value_ints=[-1]), batch, n, axis=0))
    return op.Reshape(op.Transpose(stacked, perm=[1, 0, 2]), op.Concat(batch, op.Constant(value_ints=[-1]), axis=0))


@onnxscript.script(vampnet, default_opset=op)
def decode_windows(codes: INT64["B", "K", "T"], hop: INT64, window: INT64, overlap: INT64) -> FLOAT["B", "N"]:
    """Decode window by window: the pieces end to end, T·hop samples and then zeros to whole
    pieces. The model's end (`restore`) cuts this to its length in the same copy that fits it to
    the output's, so the whole signal is not cut twice."""
    frames = op.Shape(codes, start=2, end=3)
    # every piece's samples: a whole window, or the whole signal when it is one window
    full = op.Min(window, frames) * hop

    @graph()
    def decode_step(i: INT64, going: BOOL):
        start = op.Unsqueeze(i * window, [0])
        lo, hi, end = window_span(start, window, overlap, frames)
        piece = op.Squeeze(vampnet.codec_decoder(op.Slice(codes, lo, hi, [2])), [1])
        kept = op.Slice(piece, (start - lo) * hop, (end - lo) * hop, [1])
        # the last window may be short: zeros to the pieces' size
        return op.Identity(going), op.Pad(kept, op.Concat(op.Constant(value_ints=[0, 0, 0]), full - (end - start) * hop, axis=0))

    pieces = op.Loop(op.Squeeze(op.Div(frames + window - 1, window)), None, body=decode_step)
    return joined(pieces, op.Shape(codes, start=0, end=1))


@onnxscript.script(vampnet, default_opset=op)
def decode(
    codes: INT64["B", "K", "T"], samples: INT64[1], hop: INT64, window: INT64, overlap: INT64
) -> FLOAT["B", "S"]:
    """Decode window by window and trim to `samples` (at most T·hop)."""
    return op.Slice(decode_windows(codes, hop, window, overlap), [0], samples, [1])
