"""Golden inputs for a reference model, as `model-image build --vectors` reads them.

Usage: python golden.py MODELS_DIR (digits-cnn | digits-mlp | minilm) OUT.json

digits: the first four held-out images (FP32, [4, 1, 8, 8] for the CNN, [4, 64] for the MLP).
minilm: two of the reference sentences (BYTES `text`, tokenized on the appliance), with a
tolerance that allows for float rounding across CPUs.
"""

import json
import sys
from pathlib import Path

import numpy as np


def main():
    models, kind, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    if kind == "minilm":
        doc = {
            "tolerance": {"absolute": 0.002, "relative": 0.002},
            "cases": [{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2],
                                   "data": ["The weather is lovely today.", "He drove to the stadium."]}]}],
        }
    elif kind in ("digits-cnn", "digits-mlp"):
        x = np.fromfile(models / "digits_test_x.f32", dtype="<f4").reshape(-1, 64)[:4]
        shape = [4, 1, 8, 8] if kind == "digits-cnn" else [4, 64]
        doc = {"cases": [{"inputs": [{"name": "input", "datatype": "FP32", "shape": shape,
                                      "data": [float(v) for v in x.ravel()]}]}]}
    else:
        raise SystemExit(f"unknown kind {kind}: digits-cnn, digits-mlp or minilm")
    out.write_text(json.dumps(doc) + "\n")


if __name__ == "__main__":
    sys.exit(main())
