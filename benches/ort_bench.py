"""onnxruntime's side of benches/engine.rs: the same model file, the same inputs, one thread.

Usage: python ort_bench.py MODEL SECONDS NAME:DTYPE:D0xD1x...:RAWFILE [...]

Times session.run only (inputs are prepared once, outside the timed loop, as the Rust side
prepares its own), for at least SECONDS and at least 5 runs, and prints
{"median_ns": ..., "runs": ...} as one JSON line.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))
from ort_run import load_feeds, session as ort_session  # noqa: E402


def main():
    model, seconds, *specs = sys.argv[1:]
    feeds = load_feeds(specs)
    session = ort_session(model)
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
