"""The generating stages of the single model: coarse vamp and coarse-to-fine (the codec's
encode and decode are in graphs/codec.py).

Each stage calls an exported component as an opaque op of the "vampnet" domain
(`vampnet.coarse_transformer`, `vampnet.c2f_transformer`) with the tokens and the adapter index
(the fine-tune to generate with, docs/adapters.md; the assembler drops it from the calls of a
transformer without adapters). The assembler (builder/assemble.py) inlines these stage functions
into the main graph and then hands each component call its weights from the main graph's
initializers, so the transformers inside the step Loops read their weights from the outer scope
instead of carrying copies.

Chunking follows upstream's Interface (coarse_vamp, coarse_to_fine): the coarse stage works on
`chunk`-frame pieces (575 frames = 10 s; the last one shorter) and pins the first and last frame of
each chunk as prompt where the row keeps anything at all; coarse-to-fine works on 173-frame pieces
(3 s), the tail padded with token 0 and generated, then cropped. Every chunk and step draws its own
noise (upstream re-seeds every coarse chunk with the same seed; we do not).

Upstream Interface.vamp's options sit around the coarse stage: `stretch_time` / `stretch_mask`
(graphs/model.py calls them) repeat every frame f times and generate the added frames (the
whole output is then f times as long), and feedback (`coarse_stage`'s passes) runs it N times, each
pass on the previous one's output with the same mask and its own noise. As upstream, each pass
re-masks the same positions, so a pass's generated tokens are all replaced by the next pass: only
the last pass's draws reach the output, and with deterministic settings N passes equal one.

The sampling noise is an opaque op too: each step calls
`vampnet.coarse_noise` / `vampnet.c2f_noise` (stage_key, chunk, step, steps, sample_cutoff, logits)
-> (q (B, N, V), u (B, N)). The assembler binds both to one of two implementations:

* `prng_noise` (the model as built): the in-graph counter PRNG, keys derived
  stage key -> chunk -> step -> purpose (0: q, 1: u), see graphs/prng.py.
* `injected_noise` (test only, `assemble(..., noise_inputs=True)`): reads draw
  d = chunk·steps + step from noise banks q (D, B, N, V) and u (D, B, N) that the assembler appends
  to the call as outer-scope graph inputs (`coarse_noise_q`, `coarse_noise_u`, `c2f_noise_q`,
  `c2f_noise_u`), the way the components get their weights. A harness fills the banks with
  upstream's PyTorch draws, in upstream's order, to reproduce a seeded upstream run token for token.
"""
import onnxscript
from onnxscript import BOOL, FLOAT, INT32, INT64
from onnxscript.values import OnnxFunction, Op

from vampnet_onnx.graphs.opsets import op, vampnet
from vampnet_onnx.graphs.prng import derive_key, exponential, uniform
from vampnet_onnx.graphs.sampling import MASK_TOKEN, count_masked, generation_step, is_sampling_step


@onnxscript.script(vampnet, default_opset=op)
def sampling_noise(
    key: INT32[2], step: INT64, steps: INT64, sample_cutoff: FLOAT, logits: FLOAT["B", "N", "V"]
) -> tuple[FLOAT["B", "N", "V"], FLOAT["B", "N"]]:
    """Exponential noise q for the token draw (argmax p/q) and uniforms u for re-masking.

    q is only drawn on steps that sample (argmax steps never read it) instead of N·V hashes.
    """
    step_key = derive_key(key, step)
    shape = op.Shape(logits)
    if is_sampling_step(step, steps, sample_cutoff):
        q = exponential(uniform(derive_key(step_key, 0), shape))
    else:
        q = op.Expand(0.0, [0, 0, 0])  # empty, but of the same rank as the other branch
    u = uniform(derive_key(step_key, 1), op.Slice(shape, [0], [2]))
    return q, u


@onnxscript.script(vampnet, default_opset=op)
def prng_noise(
    key: INT32[2], chunk: INT64, step: INT64, steps: INT64, sample_cutoff: FLOAT, logits: FLOAT["B", "N", "V"]
) -> tuple[FLOAT["B", "N", "V"], FLOAT["B", "N"]]:
    """The model's noise: `sampling_noise` under the chunk's key (stage key -> chunk -> step -> purpose)."""
    q, u = sampling_noise(derive_key(key, chunk), step, steps, sample_cutoff, logits)
    return q, u


@onnxscript.script(vampnet, default_opset=op)
def injected_noise(
    key: INT32[2],
    chunk: INT64,
    step: INT64,
    steps: INT64,
    sample_cutoff: FLOAT,
    logits: FLOAT["B", "N", "V"],
    noise_q: FLOAT["D", "B", "N", "V"],
    noise_u: FLOAT["D", "B", "N"],
) -> tuple[FLOAT["B", "N", "V"], FLOAT["B", "N"]]:
    """Test-only noise read from banks: draw d = chunk·steps + step of `noise_q` / `noise_u`.

    noise_q[d] is the exponential noise of upstream's multinomial (torch draws it as
    `empty(B·N, V).exponential_(1)`, row b·N + n = [b, n]); noise_u[d] the `uniform_(1e-20, 1)`
    draws (B, N) of the re-masking. `key` is unused. Argmax steps read no q, so the q bank may
    stop at the last sampling step (an empty (0, B, N, V) bank when no step samples).

    Every draw must have the chunk's own shape, so one bank serves chunks of one size: any number
    of c2f chunks (always 173 frames; upstream's stream simply continues from chunk to chunk), but
    only coarse inputs whose chunks are all equally long (one chunk, or exact multiples of 575
    frames). For a seeded upstream run the coarse bank repeats: upstream re-seeds every coarse chunk.
    """
    draw = chunk * steps + step
    if is_sampling_step(step, steps, sample_cutoff):
        q = op.Gather(noise_q, draw, axis=0)
    else:
        q = op.Expand(0.0, [0, 0, 0])
    u = op.Gather(noise_u, draw, axis=0)
    return q, u


@onnxscript.script(vampnet, default_opset=op)
def apply_mask(z: INT64["B", "C", "T"], mask: INT64["B", "C", "T"]) -> INT64["B", "C", "T"]:
    return op.Where(op.Equal(mask, 1), MASK_TOKEN, z)


@onnxscript.script(vampnet, default_opset=op)
def with_anchors(mask: INT64["B", "C", "T"]) -> INT64["B", "C", "T"]:
    """Upstream's stitching anchors: in a row that keeps any token, keep its first and last frame."""
    keeps_any = op.ReduceMin(mask, [1, 2], keepdims=1) == 0  # (B, 1, 1)
    t = op.Shape(mask, start=2, end=3)
    frame = op.Range(0, op.Squeeze(t), 1)
    edge = op.Unsqueeze(op.Or(frame == 0, frame == op.Squeeze(t) - 1), [0, 1])  # (1, 1, T)
    return op.Where(op.And(keeps_any, edge), op.CastLike(0, mask), mask)


@onnxscript.script(vampnet, default_opset=op)
def stretch_time(x: INT64["B", "K", "T"], factor: INT64) -> INT64["B", "K", "F"]:
    """Upstream `x.repeat_interleave(factor, dim=-1)`: frame t·f + j is frame t (f >= 1)."""
    n_frames = op.Squeeze(op.Shape(x, start=2, end=3))
    return op.Gather(x, op.Range(0, n_frames * factor, 1) / factor, axis=2)


@onnxscript.script(vampnet, default_opset=op)
def stretch_mask(mask: INT64["B", "K", "T"], factor: INT64) -> INT64["B", "K", "F"]:
    """Upstream Interface.vamp's stretched mask: repeated like the codes, and every frame that
    the stretch added (index not a multiple of f) generated: mask | added."""
    stretched = stretch_time(mask, factor)
    frame = op.Range(0, op.Squeeze(op.Shape(stretched, start=2, end=3)), 1)
    added = op.Cast(frame % factor != 0, to=INT64.dtype)
    return op.Max(stretched, op.Unsqueeze(added, [0, 1]))


def chunked_generation(stage: str):
    """Upstream's chunk-and-step loop for one stage, as the function `{stage}_generation` calling
    the stage's ops `vampnet.{stage}_transformer` and `vampnet.{stage}_noise` (chosen here, at trace
    time: the two stages' loops are two functions of one source).

    Chunk c is frames [c·chunk, (c+1)·chunk) (the last one may be shorter); each runs `steps`
    generation steps from its masked tokens. `anchored` pins each chunk's first and last frame
    where the row keeps anything (the coarse stage's stitching); the first `n_conditioning`
    codebooks are never generated; `adapter` goes to every transformer call.
    """
    transformer = Op(vampnet, f"{stage}_transformer")
    noise = Op(vampnet, f"{stage}_noise")

    @onnxscript.script(vampnet, default_opset=op)
    def generate(
        codes: INT64["B", "C", "T"],
        mask: INT64["B", "C", "T"],
        key: INT32[2],
        chunk: INT64,
        n_conditioning: INT64,
        anchored: BOOL,
        steps: INT64,
        temperature: FLOAT,
        mask_temperature: FLOAT,
        top_p: FLOAT,
        sample_cutoff: FLOAT,
        adapter: INT64,
    ) -> INT64["B", "C", "T"]:
        n_frames = op.Shape(codes, start=2, end=3)
        n_chunks = op.Squeeze(op.Div(n_frames + chunk - 1, chunk))
        result = op.Slice(codes, [0], [0], [2])  # (B, C, 0), grown chunk by chunk
        for c in range(n_chunks):
            start = op.Unsqueeze(c * chunk, [0])
            z_c = op.Slice(codes, start, start + chunk, [2])
            m_c = op.Slice(mask, start, start + chunk, [2])
            m_c = op.Where(anchored, with_anchors(m_c), m_c)
            zm = apply_mask(z_c, m_c)
            n0 = count_masked(zm)
            x = z_c
            for i in range(steps):
                logits = transformer(zm, adapter)
                q, u = noise(key, c, i, steps, sample_cutoff, logits)
                zm, x = generation_step(
                    logits, zm, z_c, n0, i, steps, temperature, mask_temperature, top_p, sample_cutoff,
                    q, u, n_conditioning,
                )
            result = op.Concat(result, x, axis=2)
        return result

    # onnxscript names a function after its Python name; each stage's copy needs its own
    generate.function_ir.name = f"{stage}_generation"
    return OnnxFunction(generate.opset, generate.function, generate.function_ir, generate.source, generate.kwargs)


generate_coarse = chunked_generation("coarse")
generate_c2f = chunked_generation("c2f")


@onnxscript.script(vampnet, default_opset=op)
def coarse_stage(
    codes: INT64["B", "K", "T"],
    mask: INT64["B", "K", "T"],
    key: INT32[2],
    feedback_key: INT32[2],
    passes: INT64,
    chunk: INT64,
    n_coarse: INT64,
    steps: INT64,
    temperature: FLOAT,
    mask_temperature: FLOAT,
    top_p: FLOAT,
    sample_cutoff: FLOAT,
    adapter: INT64,
) -> INT64["B", "K", "T"]:
    """Coarse vamp: regenerate the first `n_coarse` codebooks, chunk by chunk; the fine ones pass through.

    Upstream's feedback runs the stage `passes` times (>= 1), each pass on the previous pass's
    output with the same mask. Pass 0 draws from `key`, so one pass is the plain coarse stage;
    pass p >= 1 draws from derive_key(feedback_key, p), its own noise.
    """
    z = op.Slice(codes, [0], op.Unsqueeze(n_coarse, [0]), [1])
    m = op.Slice(mask, [0], op.Unsqueeze(n_coarse, [0]), [1])
    for p in range(passes):
        pass_key = op.Where(p == 0, key, derive_key(feedback_key, p))
        z = generate_coarse(
            z, m, pass_key, chunk, 0, True, steps, temperature, mask_temperature, top_p, sample_cutoff, adapter
        )
    fine = op.Slice(codes, op.Unsqueeze(n_coarse, [0]), op.Shape(codes, start=1, end=2), [1])
    return op.Concat(z, fine, axis=1)


@onnxscript.script(vampnet, default_opset=op)
def c2f_stage(
    codes: INT64["B", "K", "T"],
    mask: INT64["B", "K", "T"],
    key: INT32[2],
    chunk: INT64,
    n_conditioning: INT64,
    steps: INT64,
    temperature: FLOAT,
    mask_temperature: FLOAT,
    top_p: FLOAT,
    sample_cutoff: FLOAT,
    adapter: INT64,
) -> INT64["B", "K", "T"]:
    """Coarse-to-fine: the coarse codebooks condition, the fine ones are generated where the mask says."""
    n_frames = op.Shape(codes, start=2, end=3)
    tail = op.Div(n_frames + chunk - 1, chunk) * chunk - n_frames
    # upstream pads the last chunk with token 0, generated (mask 1), and crops it afterwards
    z = op.Pad(codes, op.Concat([0, 0, 0, 0, 0], tail, axis=0), op.Constant(value_int=0))
    m = op.Pad(mask, op.Concat([0, 0, 0, 0, 0], tail, axis=0), op.Constant(value_int=1))
    is_fine = op.Range(0, op.Squeeze(op.Shape(m, start=1, end=2)), 1) >= n_conditioning
    m = op.Where(op.Unsqueeze(is_fine, [0, 2]), m, op.CastLike(0, m))
    z = generate_c2f(
        z, m, key, chunk, n_conditioning, False, steps, temperature, mask_temperature, top_p, sample_cutoff, adapter
    )
    return op.Slice(z, [0], n_frames, [2])
