"""The model's interface, written once: every input and output with its type, default and range.

Everything that knows about the interface reads this table: the graph assembler (it checks the
graph's signature against it and stores the defaults in the model's metadata), the host (it feeds
the defaults of the inputs a caller leaves out), the command line (one flag per parameter, with
its range and help), the stub model of the host tests, and the README (a test checks that its
table is `markdown_table()`). It imports nothing, so any of them can use it.

Every input is a plain graph input: runtimes differ in how they treat inputs that carry a stored
default (onnxruntime-node ignores a fed value, onnxruntime-web and OpenVINO refuse the feed), so
the model stores none and the caller feeds all of them. The parameters are one-element tensors of
shape (1,), not 0-d scalars, so that generic tools that fill inputs with random values
(onnxruntime's `onnxruntime_test`) can feed them; the graph clamps every value it gets.

Adding an input: one entry here, plus the graph code that uses it (graphs/model.py's signature
and whatever computes with it). The CLI flag, the metadata, the README table and the host's
defaults follow from the entry.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

FORMAT_VERSION = "2"  # 2: every input a plain graph input, parameters of shape (1,)
WEIGHTS = ("float32", "int8", "int8-dynamic", "web")  # what `build --weights` makes; the model's metadata `weights` says which
PARAMETER_SHAPE = (1,)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Input:
    name: str
    dtype: str  # "float32" or "int64"
    default: int | float | None  # None: the caller must give it (audio); mask: empty
    low: int | float | None  # the range the command line accepts (None: unbounded)
    high: int | float | None
    help: str
    outside: str = "clamped"  # what the graph does with a value outside [low, high]
    upstream: str = ""  # upstream VampNet's name, where it differs or needs saying
    shape: tuple = PARAMETER_SHAPE

    @property
    def is_int(self) -> bool:
        return self.dtype == "int64"

    @property
    def is_parameter(self) -> bool:
        return self.shape == PARAMETER_SHAPE

    def check(self, value) -> int | float:
        """``value`` as this parameter's number type, if it is one and inside [low, high]; else
        ValueError saying what is accepted (the command line and the Python API both ask this)."""
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            if not hasattr(value, "item") or getattr(value, "size", 1) != 1:  # a numpy scalar
                raise ValueError(f"must be a number, got {value!r}")
            value = value.item()
        if self.is_int:
            try:
                v = int(value, 10) if isinstance(value, str) else int(value)
            except (ValueError, OverflowError):
                raise ValueError(f"must be an integer, got {value!r}") from None
            if v != value and not isinstance(value, str):
                raise ValueError(f"must be an integer, got {value!r}")
            if not INT64_MIN <= v <= INT64_MAX:  # every integer input of the model is int64
                raise ValueError(f"must be a 64-bit integer (-2^63 to 2^63-1), got {value!r}")
        else:
            try:
                v = float(value)
            except (ValueError, OverflowError):
                raise ValueError(f"must be a number, got {value!r}") from None
            if not math.isfinite(v):
                raise ValueError(f"must be a finite number, got {value!r}")
        if (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
            raise ValueError(f"must be {self.range_words()}, got {value!r}")
        return v

    def range_words(self) -> str:
        kind = "an integer" if self.is_int else "a number"
        if self.name == "seed":
            return "a 64-bit integer (-2^63 to 2^63-1)"
        lo, hi = (x if self.is_int or x is None else f"{x:g}" for x in (self.low, self.high))
        if lo is not None and hi is not None:
            return f"{kind} between {lo} and {hi}"
        return f"{kind} >= {lo}" if lo is not None else f"{kind} <= {hi}"


@dataclass(frozen=True)
class Output:
    name: str
    dtype: str
    shape: tuple
    help: str


MAX_SAMPLING_STEPS = 128
MAX_PERIOD = 1 << 23  # frames (about 40 hours at 44.1 kHz / 768; exact in the PRNG's randint)
MAX_SECONDS = 1.0e6
MAX_TEMPERATURE = 1.0e6
MIN_TEMPERATURE = 1.0e-6
MAX_FEEDBACK_STEPS = 8
MAX_TIME_STRETCH = 8
MIN_SAMPLE_RATE = 1000  # Hz; the graph clamps `sample_rate` to this range
MAX_SAMPLE_RATE = 384000
MAX_ONSET_WIDTH = 1 << 24  # frames; any width beyond the input keeps all of it anyway
MAX_ADAPTERS = 64  # fine-tunes one model may hold (`build --coarse-lora NAME=FILE ...`)
MAX_PITCH_SHIFT = 12  # semitones, as upstream's app offers
MAX_BEAT_MS = 60_000.0  # a minute after every beat; librosa's slowest tempo has beats 8 s apart

INPUTS: tuple[Input, ...] = (
    Input("audio", "float32", None, None, None,
          "mono audio at `sample_rate`, any loudness (the model resamples and normalises it as "
          "upstream's preprocessing does: docs/preprocessing.md); any length S >= 1",
          outside="NaN and ±inf samples read as 0", shape=("B", "S")),
    Input("sample_rate", "int64", 44100, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE,
          "the sample rate of `audio` in Hz; `audio_out` comes back at this rate"),
    Input("seed", "int64", 0, INT64_MIN, INT64_MAX,
          "all randomness in the model derives from it (its low 32 bits)", outside="-"),
    Input("mask", "int64", None, 0, 1,
          "explicit mask, 1 = generate, 0 = keep; empty (B, K, 0) = build it from the parameters below",
          outside="values clipped to [0, 1]; another shape is fitted: row b uses row b mod B', "
                  "codebooks and frames cropped or padded with 1 (generate)",
          shape=("MB", "MK", "MT")),
    Input("rand_mask_intensity", "float32", 1.0, 0.0, 1.0, "fraction of tokens masked at random",
          outside="clamped; NaN: 0"),
    Input("prefix_s", "float32", 0.0, 0.0, MAX_SECONDS, "seconds kept at the start",
          outside="clamped; NaN: 0"),
    Input("suffix_s", "float32", 0.0, 0.0, MAX_SECONDS, "seconds kept at the end",
          outside="clamped; NaN: 0"),
    Input("periodic_prompt", "int64", 7, 0, MAX_PERIOD,
          "keep every P-th frame, randomly rolled (0 = off)"),
    Input("periodic_prompt_width", "int64", 1, 0, MAX_PERIOD,
          "frames kept around each periodic anchor", outside="clamped (0 acts as 1, as upstream)"),
    Input("dropout", "float32", 0.0, 0.0, 1.0, "fraction of frames re-masked at random",
          outside="clamped; NaN: 0", upstream="_dropout"),
    Input("ncc", "int64", 0, 0, 14, "conditioning codebooks forced to keep",
          outside="clamped to [0, codebooks]"),
    Input("upper_codebook_mask", "int64", 3, 0, 14, "codebooks >= this are fully generated",
          outside="clamped to [0, codebooks]"),
    Input("sampling_steps", "int64", 12, 1, MAX_SAMPLING_STEPS, "coarse sampling steps",
          upstream="_sampling_steps"),
    Input("temperature", "float32", 1.0, None, None, "coarse sampling temperature (<= 0: untempered)",
          outside=f"<= 0 or NaN: untempered (1.0), as upstream; else clamped to [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]"),
    Input("mask_temperature", "float32", 10.5, None, None,
          "coarse re-masking temperature (0: deterministic)",
          outside=f"< 0 or NaN: 0; capped at {MAX_TEMPERATURE:g}"),
    Input("top_p", "float32", 1.0, None, None, "coarse nucleus sampling (1.0 = off)",
          outside=">= 1 or NaN: off; < 0: 0 (keeps the top token only)"),
    Input("sample_cutoff", "float32", 1.0, None, None,
          "fraction of coarse steps that sample (< 0: argmax at every step)",
          outside="any value; NaN: never sample (argmax)"),
    Input("c2f_sampling_steps", "int64", 2, 1, MAX_SAMPLING_STEPS, "coarse-to-fine sampling steps"),
    Input("c2f_temperature", "float32", 1.0, None, None, "coarse-to-fine sampling temperature",
          outside="as temperature"),
    Input("c2f_mask_temperature", "float32", 10.5, None, None,
          "coarse-to-fine re-masking temperature", outside="as mask_temperature"),
    Input("c2f_top_p", "float32", 1.0, None, None, "coarse-to-fine nucleus sampling (1.0 = off)",
          outside="as top_p"),
    Input("c2f_sample_cutoff", "float32", 1.0, None, None,
          "fraction of coarse-to-fine steps that sample", outside="as sample_cutoff"),
    Input("feedback_steps", "int64", 1, 1, MAX_FEEDBACK_STEPS,
          "coarse passes, each on the previous pass's output with the same mask "
          "(coarse time × N)"),
    Input("time_stretch_factor", "int64", 1, 1, MAX_TIME_STRETCH,
          "every frame repeated f times, the added frames generated: all outputs are f× as long "
          "(generation time × f)"),
    Input("onset_mask_width", "int64", 0, 0, MAX_ONSET_WIDTH,
          "keep the frames [o − W, o + W) around every note onset o of `audio` (0 = off; "
          "ignored with an explicit mask)"),
    Input("beat_mask_ms", "float32", 0.0, 0.0, MAX_BEAT_MS,
          "keep the first ms milliseconds after every beat of `audio` (librosa's beat tracker, "
          "docs/beats.md; 0 = off; ignored with an explicit mask)",
          outside="clamped; NaN: 0"),
    Input("pitch_shift", "int64", 0, -MAX_PITCH_SHIFT, MAX_PITCH_SHIFT,
          "semitones the preprocessed input is shifted by before it is encoded (0 = off); the "
          "codec and the onset and beat prompts hear the shifted audio, as in upstream's app "
          "(docs/pitch-shift.md)",
          upstream="pitch shift amount"),
    Input("generate", "int64", 1, 0, 1,
          "0: only build the mask, a preview: `mask_out` as a full run's, the codec and both "
          "generation stages skipped: `codes`, `coarse_codes` and `codes_out` hold the mask "
          "token (vocab_size) and `audio_out` is silence, each of a full run's shape",
          outside="any value other than 0 acts as 1"),
    Input("adapter", "int64", 0, 0, MAX_ADAPTERS,
          "fine-tune to generate with: 0 = the base model, k = the k-th adapter built in "
          "(their names: metadata `adapters`)",
          outside="clamped to [0, adapters built in]"),
)

OUTPUTS: tuple[Output, ...] = (
    Output("audio_out", "float32", ("B", "S_out"),
           "generated audio at `sample_rate` with the input's loudness, S_out = f·S samples "
           "(f = time_stretch_factor, clamped)"),
    Output("codes", "int64", ("B", "K", "T"),
           "the input's codes, T = f·ceil(S' / hop), S' = the input's length at the model's rate (stretched)"),
    Output("mask_out", "int64", ("B", "K", "T"), "the mask that was used (stretched)"),
    Output("coarse_codes", "int64", ("B", "K", "T"), "after the coarse stage (fine codebooks still the input's)"),
    Output("codes_out", "int64", ("B", "K", "T"), "final codes"),
)

INPUT_NAMES = tuple(i.name for i in INPUTS)
OUTPUT_NAMES = tuple(o.name for o in OUTPUTS)
BY_NAME = {i.name: i for i in INPUTS}
PARAMETERS = tuple(i for i in INPUTS if i.is_parameter)
DEFAULTS: dict[str, int | float] = {p.name: p.default for p in PARAMETERS}
CONTROLS = tuple(p.name for p in PARAMETERS if p.name not in ("seed", "sample_rate", "generate"))
"""The parameters that are controls of a run: a flag each, a keyword each of ``Model.vamp``
(the seed has a flag and a keyword of its own; the sample rate is the input's own; `generate`
is the preview's switch, set by `vampnet-onnx mask` and `Model.mask`)."""


def defaults_json() -> str:
    """The parameters' defaults as the model's "defaults" metadata (JSON, name -> value)."""
    return json.dumps(DEFAULTS)


# Upstream's app presets (app.py, change_preset): name -> the inputs each one sets. A model
# without one of these inputs (beat_mask_ms came later) ignores that value (`preset_values`).
PRESET_INPUTS = ("periodic_prompt", "upper_codebook_mask", "onset_mask_width", "dropout", "beat_mask_ms")
PRESETS: dict[str, dict[str, int | float]] = {
    name: dict(zip(PRESET_INPUTS, values)) for name, values in (
        ("timbre transfer", (2, 1, 0, 0.0, 0.0)),
        ("small variation", (5, 4, 0, 0.0, 0.0)),
        ("small variation (follow beat)", (7, 4, 0, 0.0, 50.0)),
        ("medium variation", (7, 4, 0, 0.0, 0.0)),
        ("medium variation (follow beat)", (13, 4, 0, 0.0, 50.0)),
        ("large variation", (13, 4, 0, 0.2, 0.0)),
        ("large variation (follow beat)", (0, 4, 0, 0.0, 80.0)),
        ("unconditional", (0, 1, 0, 0.0, 0.0)),
    )
}


def preset_values(name: str, inputs=None) -> dict[str, int | float]:
    """The inputs preset `name` sets, only those in `inputs` (a model's input names) when given.
    An unknown name raises ValueError with a one-line message that lists the presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; the presets are: {', '.join(map(repr, PRESETS))}")
    return {k: v for k, v in PRESETS[name].items() if inputs is None or k in inputs}


def presets_json() -> str:
    """The presets as the model's "presets" metadata (JSON, name -> {input: value})."""
    return json.dumps(PRESETS)


def presets_text(presets: dict[str, dict[str, int | float]] | None = None) -> str:
    """One line per preset, its name and the inputs it sets (`--help`, `vampnet-onnx info`)."""
    return "\n".join(f"  {name}: " + ", ".join(f"{k} {v:g}" for k, v in values.items())
                     for name, values in (PRESETS if presets is None else presets).items())


def presets_markdown() -> str:
    """The README's preset table (a test checks that the README holds exactly this)."""
    rows = ["| preset | " + " | ".join(f"`{k}`" for k in PRESET_INPUTS) + " |",
            "|---" * (len(PRESET_INPUTS) + 1) + "|"]
    for name, values in PRESETS.items():
        rows.append(f"| {name} | " + " | ".join(f"{values[k]:g}" for k in PRESET_INPUTS) + " |")
    return "\n".join(rows)


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def _range_text(i: Input) -> str:
    if i.low is None and i.high is None:
        return "any"
    if i.name == "seed":
        return "any int64"
    return f"[{i.low:g}, {i.high:g}]" if not i.is_int else f"[{i.low}, {i.high}]"


def markdown_table() -> str:
    """The README's input table (a test checks that the README holds exactly this)."""
    rows = ["| input | type, shape | default | valid range | outside it | meaning |",
            "|---|---|---|---|---|---|"]
    for i in INPUTS:
        default = "—" if i.default is None else repr(i.default)
        if i.name == "mask":
            default = "empty (1, K, 0)"
        meaning = i.help + (f" (upstream `{i.upstream}`)" if i.upstream else "")
        rows.append(f"| `{i.name}` | {i.dtype} {_shape_text(i.shape)} | {default} | "
                    f"{'—' if i.name == 'audio' else _range_text(i)} | {i.outside} | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
    print()
    print(presets_markdown())
