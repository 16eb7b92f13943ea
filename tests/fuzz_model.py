"""Fuzz the single model with onnxruntime: random audio and mask shapes, random and extreme values
for every scalar input. Run as a script (tests/test_hardening.py runs it in a subprocess, so that a
crash inside onnxruntime is a failed test, not a dead pytest):

    python tests/fuzz_model.py MODEL CASES SEED

Exits 0 after printing "ok CASES"; on the first output with NaN/Inf or of the wrong shape it
prints the case (enough to reproduce it) and exits 1. A hang is caught by the caller's timeout.
In some cases one parameter is fed with a shape other than its (1,): onnxruntime must refuse it
with an exception (or run it to a clean result), never crash. Parameters not drawn get their
defaults from the model's metadata, as every caller must feed every input.
"""
from __future__ import annotations

import sys

import json

import numpy as np

from vampnet_onnx.interface import BY_NAME

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Values at and beyond every edge the graph clamps (README: inputs out of range).
EXTREME_INTS = [0, 1, -1, 2, 3, 7, 13, 14, 15, 128, 129, 2**24, 2**24 + 1, -(2**31), 2**31,
                2**62, INT64_MIN, INT64_MAX]
EXTREME_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-6, 1e-45, 1e6, 1e30, -1e30, 3.4e38, -3.4e38,
                  np.inf, -np.inf, np.nan]
# A coarse-to-fine step costs about 80 ms per batch row even on one frame (it runs on a whole
# chunk), so its step count is always fed and stays at or below one (clamped to 1); its upper clamp
# (128 steps, 10 s here) is left to the CLI tests. Coarse steps at the upper clamp cost 10x the
# default: only the first case (one short clip) takes them, the others draw from the lower edges
# (one long, slow-rate, stretched clip at 128 steps once took two minutes of this test's four).
# Feedback passes and the time stretch multiply every step: their edges are drawn from short lists.
FEW_STEPS = {"c2f_sampling_steps": [INT64_MIN, -(2**31), -1, 0, 1],
             "sampling_steps": [INT64_MIN, -(2**31), -1, 0, 1, 2, 12, 13],
             "feedback_steps": [INT64_MIN, -1, 0, 1, 2, 9],
             "time_stretch_factor": [INT64_MIN, -1, 0, 1, 2, 3, INT64_MAX]}
FIRST_CASE = {"sampling_steps": INT64_MAX}


def random_value(rng: np.random.Generator, name: str, kind: str):
    if name in FEW_STEPS:
        return np.array([FEW_STEPS[name][rng.integers(len(FEW_STEPS[name]))]], np.int64)
    if kind == "tensor(int64)":
        if rng.random() < 0.6:
            return np.array([EXTREME_INTS[rng.integers(len(EXTREME_INTS))]], np.int64)
        return np.array([rng.integers(-50, 50)], np.int64)
    if rng.random() < 0.6:
        return np.array([EXTREME_FLOATS[rng.integers(len(EXTREME_FLOATS))]], np.float32)
    return np.array([rng.uniform(-2.0, 12.0)], np.float32)


def random_case(rng: np.random.Generator, scalars: dict[str, str], defaults: dict, hop: int, n_codebooks: int):
    batch = int(rng.choice([1, 1, 1, 1, 2, 3]))  # c2f cost grows with the batch
    samples = int(rng.choice([1, 2, hop - 1, hop, hop + 1, int(rng.integers(1, 5000))]))
    scale = float(rng.choice([0.0, 1e-4, 0.1, 1.0, 50.0]))
    feeds = {"audio": (rng.standard_normal((batch, samples)) * scale).astype(np.float32)}
    feeds["mask"] = np.zeros((1, n_codebooks, 0), np.int64)
    for name, kind in scalars.items():
        if name in FEW_STEPS or rng.random() < 0.7:
            feeds[name] = random_value(rng, name, kind)
        else:
            feeds[name] = np.array([defaults[name]], np.int64 if kind == "tensor(int64)" else np.float32)
    if rng.random() < 0.05:  # a scalar input of the wrong rank
        name = sorted(scalars)[int(rng.integers(len(scalars)))]
        shape = tuple(int(d) for d in rng.integers(0, 3, int(rng.integers(1, 3))))
        feeds[name] = np.broadcast_to(random_value(rng, name, scalars[name]), shape).copy()
    if rng.random() < 0.35:  # an explicit mask of any shape and values (fitted inside the graph)
        frames = -(-samples // hop)
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, n_codebooks + 3)),
                 int(rng.integers(0, frames + 3)))
        feeds["mask"] = rng.integers(-3, 4, shape).astype(np.int64)
    return feeds


def main(path: str, cases: int, seed: int) -> int:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # refused wrong-rank feeds would log errors
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    hop, n_codebooks = int(meta.get("hop_length", 768)), int(meta.get("n_codebooks", 14))
    model_rate = int(meta["sample_rate"])
    scalars = {i.name: i.type for i in session.get_inputs() if i.name not in ("audio", "mask")}
    defaults = json.loads(meta["defaults"])
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(seed)
    refused = 0
    for case in range(cases):
        feeds = random_case(rng, scalars, defaults, hop, n_codebooks)
        if case == 0:
            feeds.update({k: np.array([v], np.int64) for k, v in FIRST_CASE.items() if k in scalars})
        batch, samples = feeds["audio"].shape
        wrong_rank = [k for k, v in feeds.items() if k in scalars and v.shape != (1,)]
        try:
            outputs = dict(zip(names, session.run(None, feeds)))
        except Exception:  # noqa: BLE001 - a refused feed is fine, a crash is not
            if wrong_rank:
                refused += 1
                continue
            raise
        problems = []
        for name, value in outputs.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                problems.append(f"{name} has NaN/Inf")
        stretch = BY_NAME["time_stretch_factor"]
        f = int(np.clip(feeds["time_stretch_factor"].reshape(-1)[0], stretch.low, stretch.high)) \
            if feeds["time_stretch_factor"].size else 1
        expected = {"audio_out": (batch, f * samples)}
        # frames of the input once the model has resampled it to its rate (the rate clamped)
        rate_input = BY_NAME["sample_rate"]
        rate = int(np.clip(feeds["sample_rate"].reshape(-1)[0], rate_input.low, rate_input.high)) \
            if feeds["sample_rate"].size else model_rate
        resampled = max(samples * model_rate // rate, 1)
        expected.update({k: (batch, n_codebooks, f * -(-resampled // hop))
                         for k in ("codes", "mask_out", "coarse_codes", "codes_out")})
        for name, shape in expected.items():
            if name in outputs and outputs[name].shape != shape:
                problems.append(f"{name} has shape {outputs[name].shape}, expected {shape}")
        if problems:
            shown = {k: (v.shape if v.ndim else v.item()) for k, v in feeds.items()}
            print(f"case {case} (seed {seed}): {'; '.join(problems)}; feeds {shown}")
            return 1
    print(f"({refused} feeds of the wrong rank refused)")
    print(f"ok {cases}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
