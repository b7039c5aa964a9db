"""Runs one ONNX model through onnxruntime (one thread) for the Rust tests' cross-checks.

The reference is the file's exact int8 semantics on onnxruntime's float kernels
(common.reference_session), not onnxruntime's own int8 kernels: on CPUs without VNNI those
add products in saturating 16-bit lanes, and a file's outputs would then depend on the CPU
(digits_mlp_qdq was off by five quantisation steps on an AVX2-only EPYC).

Usage: python ort_run.py MODEL OUT_DIR NAME:DTYPE:D0xD1x...:RAWFILE [...]

Each input is a raw little-endian file of the given dtype (float32, int64, uint8) and shape.
Writes each output as OUT_DIR/<index>.f32 (raw little-endian float32) and prints one JSON
object: {"outputs": [{"name", "shape", "file"}], "step": <output quantization step or null>}.
The step is the scale of the DequantizeLinear that produces the model's (first) output, seen
through trailing elementwise ops: "within one quantization step" means within that scale.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

PASS_THROUGH = {"Add", "Relu", "Identity", "Reshape", "Flatten"}


def output_step(model: onnx.ModelProto):
    producers = {out: node for node in model.graph.node for out in node.output}
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    name = model.graph.output[0].name
    while name in producers:
        node = producers[name]
        if node.op_type == "DequantizeLinear":
            scale = consts.get(node.input[1])
            return None if scale is None else float(np.max(scale))
        if node.op_type not in PASS_THROUGH:
            return None
        name = node.input[0]
    return None


def load_feeds(specs):
    """Inputs from NAME:DTYPE:D0xD1x...:RAWFILE specs (raw little-endian files)."""
    feeds = {}
    for spec in specs:
        name, dtype, shape, path = spec.split(":")
        dims = [int(d) for d in shape.split("x")]
        feeds[name] = np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<")).reshape(dims)
    return feeds


def session(model_path):
    """An onnxruntime session on one thread, CPU only: the engine's fair baseline."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])


def main():
    model_path, out_dir, *specs = sys.argv[1:]
    feeds = load_feeds(specs)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common  # noqa: E402  (beside this file; the benchmark imports this module without it)

    session_ = common.reference_session(onnx.load(model_path))
    results = session_.run(None, feeds)
    outputs = []
    for index, (meta, value) in enumerate(zip(session_.get_outputs(), results)):
        path = Path(out_dir) / f"{index}.f32"
        np.ascontiguousarray(value, dtype="<f4").tofile(path)
        outputs.append({"name": meta.name, "shape": list(value.shape), "file": str(path)})
    step = output_step(onnx.load(model_path))
    print(json.dumps({"outputs": outputs, "step": step}))


if __name__ == "__main__":
    main()
