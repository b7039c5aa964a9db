"""onnxruntime's side of benches/engine.rs: the same model file, the same inputs, one thread.

Usage: python ort_bench.py MODEL SECONDS NAME:DTYPE:D0xD1x...:RAWFILE [...]

Times session.run only (inputs are prepared once, outside the timed loop, as the Rust side
prepares its own), for at least SECONDS and at least 5 runs, and prints
{"median_ns": ..., "runs": ...} as one JSON line.
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    model, seconds, *specs = sys.argv[1:]
    feeds = {}
    for spec in specs:
        name, dtype, shape, path = spec.split(":")
        dims = [int(d) for d in shape.split("x")]
        feeds[name] = np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<")).reshape(dims)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    session.run(None, feeds)  # warm-up
    times = []
    deadline = time.perf_counter() + float(seconds)
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter_ns()
        session.run(None, feeds)
        times.append(time.perf_counter_ns() - start)
    times.sort()
    print(json.dumps({"median_ns": times[len(times) // 2], "runs": len(times)}))


if __name__ == "__main__":
    main()
