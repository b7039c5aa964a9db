"""Digits reference classifiers: an MLP and a small CNN on scikit-learn's bundled 8x8 digits.

Why these exist: they are small enough for fast Rust tests yet real enough that accuracy means
something, and they come in every int8 form tract 0.23 runs (QDQ, QOperator with standard ops,
dynamic) plus one it must refuse (onnxruntime's contrib QGemm), so the appliance's loader and
engine can be tested against each.

Usage: python digits.py OUT_DIR [--force]

Writes into OUT_DIR, for MODEL in digits_mlp and digits_cnn:
  MODEL.onnx             float32, trained here (input `input`, output `logits` [N,10])
  MODEL_qdq.onnx         static int8, QuantizeLinear/DequantizeLinear pairs
  MODEL_qoperator.onnx   static int8, QLinearMatMul/QLinearConv (standard ops only)
  MODEL_dynamic.onnx     dynamic int8, DynamicQuantizeLinear + MatMulInteger/ConvInteger
and digits_mlp_qgemm_unsupported.onnx (negative fixture holding com.microsoft.QGemm), a JSON
sidecar beside each, and the held-out test set as digits_test.npz, digits_test_x.f32 (N*64
float32, little-endian) and digits_test_y.u8 (N labels).
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

import common

SEED = 0
PREPROCESSING = "8x8 grey image, row-major; each pixel (0..16 in the data set) divided by 16.0 to [0, 1]"
SOURCE = "scikit-learn load_digits (1,797 images), trained by models/digits.py"
SPLIT = "sklearn train_test_split(test_size=0.25, random_state=0, stratify=labels): 1,347 train / 450 test"
FAMILIES = ("digits_mlp", "digits_cnn")
VARIANTS = ("", "_qdq", "_qoperator", "_dynamic")
FIXTURE = "digits_mlp_qgemm_unsupported"
MODEL_NAMES = [f + v for f in FAMILIES for v in VARIANTS] + [FIXTURE]
DATA_FILES = ["digits_test.npz", "digits_test_x.f32", "digits_test_y.u8"]
MAX_INT8_DROP = 1.0  # accuracy points an int8 variant may lose against its float model


def load_split():
    """The fixed held-out split every digits model is trained and measured on."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.uint8)
    return train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)


# --- MLP ---------------------------------------------------------------------------------------


def train_mlp(x, y):
    """64 -> 64 (ReLU) -> 10 with scikit-learn; deterministic with a fixed seed."""
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=SEED)
    clf.fit(x, y)
    (w1, w2), (b1, b2) = clf.coefs_, clf.intercepts_
    return [a.astype(np.float32) for a in (w1, b1, w2, b2)]


def mlp_graph(w1, b1, w2, b2):
    """input [N,64] -> Gemm -> Relu -> Gemm -> logits [N,10] (scikit-learn's layout: x @ W + b)."""
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h1"], name="dense1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["logits"], name="dense2"),
    ]
    inits = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    return helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )


# --- CNN (trained with numpy) ------------------------------------------------------------------


def im2col(x):
    """[n,64] images -> [n,64,9]: the 3x3 neighbourhood (zero padded) of each pixel, in the
    (kh, kw) order of an ONNX Conv weight."""
    padded = np.pad(x.reshape(-1, 8, 8), ((0, 0), (1, 1), (1, 1)))
    cols = [padded[:, kh : kh + 8, kw : kw + 8] for kh in range(3) for kw in range(3)]
    return np.stack(cols, axis=-1).reshape(-1, 64, 9)


def cnn_forward(p, patches):
    """Conv 3x3 (16 ch, pad 1) -> ReLU -> MaxPool 2x2 -> Flatten (c,h,w) -> 256->64 ReLU -> 10."""
    b = patches.shape[0]
    z = patches @ p["wc"] + p["bc"]  # [b, 64 positions, 16 channels]
    a = np.maximum(z, 0)
    # [b, h/2, w/2, c, 4]: the four pixels of each pooling window last
    windows = a.reshape(b, 4, 2, 4, 2, 16).transpose(0, 1, 3, 5, 2, 4).reshape(b, 4, 4, 16, 4)
    pooled = windows.max(-1)
    flat = pooled.transpose(0, 3, 1, 2).reshape(b, 256)  # channel-major, as ONNX Flatten
    h = np.maximum(flat @ p["w1"] + p["b1"], 0)
    logits = h @ p["w2"] + p["b2"]
    return logits, (z, windows.argmax(-1), flat, h)


def cnn_gradients(p, patches, y):
    """Softmax cross-entropy gradients by hand-written backpropagation."""
    b = patches.shape[0]
    logits, (z, arg, flat, h) = cnn_forward(p, patches)
    e = np.exp(logits - logits.max(1, keepdims=True))
    d = e / e.sum(1, keepdims=True)
    d[np.arange(b), y] -= 1
    d /= b
    g = {"w2": h.T @ d, "b2": d.sum(0)}
    dh = (d @ p["w2"].T) * (h > 0)
    g["w1"], g["b1"] = flat.T @ dh, dh.sum(0)
    dpooled = (dh @ p["w1"].T).reshape(b, 16, 4, 4).transpose(0, 2, 3, 1)
    dwindows = (np.arange(4) == arg[..., None]) * dpooled[..., None]
    da = dwindows.reshape(b, 4, 4, 16, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(b, 64, 16)
    dz = da * (z > 0)
    g["wc"], g["bc"] = np.einsum("bpk,bpc->kc", patches, dz), dz.sum((0, 1))
    return g


def train_cnn(x, y, epochs=30, batch=32, lr=3e-3):
    """Adam on mini-batches, He-initialised; a few seconds of one core."""
    rng = np.random.default_rng(SEED)
    shapes = {"wc": (9, 16), "bc": (16,), "w1": (256, 64), "b1": (64,), "w2": (64, 10), "b2": (10,)}
    p = {
        k: rng.normal(0, np.sqrt(2 / s[0]), s) if len(s) == 2 else np.zeros(s)
        for k, s in shapes.items()
    }
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    patches, step = im2col(x), 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            g = cnn_gradients(p, patches[idx], y[idx])
            step += 1
            for k in p:
                m[k] = 0.9 * m[k] + 0.1 * g[k]
                v[k] = 0.999 * v[k] + 0.001 * g[k] ** 2
                mhat, vhat = m[k] / (1 - 0.9**step), v[k] / (1 - 0.999**step)
                p[k] -= lr * mhat / (np.sqrt(vhat) + 1e-8)
    return {k: a.astype(np.float32) for k, a in p.items()}


def cnn_graph(p):
    """input [N,1,8,8] -> Conv -> Relu -> MaxPool -> Flatten -> Gemm -> Relu -> Gemm -> logits."""
    wc = p["wc"].T.reshape(16, 1, 3, 3)  # [out channel, in channel, kh, kw]
    nodes = [
        helper.make_node("Conv", ["input", "wc", "bc"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p1"], ["f1"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f1", "w1", "b1"], ["h1"], name="dense1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu2"),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["logits"], name="dense2"),
    ]
    inits = {"wc": wc, "bc": p["bc"], "w1": p["w1"], "b1": p["b1"], "w2": p["w2"], "b2": p["b2"]}
    return helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in inits.items()],
    )


# --- quantization ------------------------------------------------------------------------------


class Calibration(CalibrationDataReader):
    """Feeds the training images to quantize_static in batches of 128."""

    def __init__(self, x, input_shape):
        self.batches = iter([x[i : i + 128].reshape(input_shape) for i in range(0, len(x), 128)])

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {"input": batch}


# Per int8 format: how it is made (recorded in the sidecar), the operators the file must hold,
# and those it must also hold when the float model has a Conv.
FORMATS = {
    "qdq": (
        "quant_pre_process(skip_optimization=True), quantize_static QDQ, per-tensor, int8 activations and weights, MinMax calibration on the training set",
        ["QuantizeLinear", "DequantizeLinear"],
        [],
    ),
    "qoperator": (
        'quant_pre_process(skip_optimization=True), Gemm -> MatMul+Add, quantize_static QOperator op_types_to_quantize=["MatMul","Conv"], per-tensor, uint8 activations (as onnxruntime advises for QOperator) and int8 weights, MinMax calibration on the training set',
        ["QLinearMatMul"],
        ["QLinearConv"],
    ),
    "dynamic": (
        "quant_pre_process(skip_optimization=True), Gemm -> MatMul+Add, quantize_dynamic per-tensor, uint8 activations (computed per batch) and int8 weights",
        ["DynamicQuantizeLinear", "MatMulInteger"],
        ["ConvInteger"],
    ),
}


def int8_variants(float_model, x_train, input_shape):
    """The three int8 forms tract runs."""
    pre = common.preprocess(float_model)
    pre_matmul = common.preprocess(common.gemm_to_matmul(float_model))
    variants = {
        "qdq": common.via_file(
            quantize_static,
            pre,
            calibration_data_reader=Calibration(x_train, input_shape),
            quant_format=QuantFormat.QDQ,
        ),
        "qoperator": common.via_file(
            quantize_static,
            pre_matmul,
            calibration_data_reader=Calibration(x_train, input_shape),
            quant_format=QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            op_types_to_quantize=["MatMul", "Conv"],
        ),
        "dynamic": common.via_file(quantize_dynamic, pre_matmul),
    }
    return {k: common.finalize(m) for k, m in variants.items()}


def qgemm_fixture(float_mlp, x_train):
    """onnxruntime's default QOperator path, Gemm kept: Gemm becomes com.microsoft.QGemm."""
    model = common.via_file(
        quantize_static,
        common.preprocess(float_mlp),
        calibration_data_reader=Calibration(x_train, (-1, 64)),
        quant_format=QuantFormat.QOperator,
        activation_type=QuantType.QUInt8,
    )
    return common.finalize(model)


def accuracy(path, x, y, exact=True):
    """Held-out accuracy of the file's exact int8 semantics (common.reference_session), so the
    figure does not depend on this CPU's onnxruntime kernels; `exact=False` for a file only
    onnxruntime itself can run (the contrib-op fixture)."""
    model = onnx.load(path)
    session = common.reference_session(model) if exact else common.session(path)
    logits = session.run(["logits"], {"input": x})[0]
    return 100.0 * float(np.mean(logits.argmax(1) == y))


def build_family(name, float_model, x_train, x_test, y_test, input_shape, out, extra):
    """Saves the float model and its int8 variants, measuring each file on the held-out set.

    Returns the failed checks.
    """
    x_test = x_test.reshape(input_shape)
    base = {"source": SOURCE, "preprocessing": PREPROCESSING, "split": SPLIT, "labels": list(range(10)), **extra}
    float_path = out / f"{name}.onnx"
    onnx.save(float_model, float_path)
    float_acc = accuracy(float_path, x_test, y_test)
    common.write_sidecar(
        float_model,
        float_path,
        {**base, "format": "float", "accuracy": round(float_acc, 2), "summary": f"held-out accuracy {float_acc:.2f}%"},
    )
    failures = []
    for fmt, model in int8_variants(float_model, x_train, input_shape).items():
        recipe, ops, conv_ops = FORMATS[fmt]
        has_conv = "Conv" in common.op_types(float_model)
        common.require_ops(model, f"{name}_{fmt}", ops + (conv_ops if has_conv else []))
        path = out / f"{name}_{fmt}.onnx"
        onnx.save(model, path)
        acc = accuracy(path, x_test, y_test)
        drop = float_acc - acc
        common.write_sidecar(
            model,
            path,
            {
                **base,
                "format": fmt,
                "quantization": recipe,
                "accuracy": round(acc, 2),
                "float_accuracy": round(float_acc, 2),
                "summary": f"held-out accuracy {acc:.2f}% (float {float_acc:.2f}%, {acc - float_acc:+.2f} pt)",
            },
        )
        if drop > MAX_INT8_DROP:
            failures.append(f"{name}_{fmt}: {acc:.2f}% is {drop:.2f} points below float {float_acc:.2f}%")
    return failures


def build(out: Path) -> list[str]:
    x_train, x_test, y_train, y_test = load_split()

    np.savez(out / "digits_test.npz", x=x_test, y=y_test)
    x_test.astype("<f4").tofile(out / "digits_test_x.f32")
    y_test.astype(np.uint8).tofile(out / "digits_test_y.u8")
    test_set = {"test_set": {"count": len(y_test), "x": "digits_test_x.f32", "y": "digits_test_y.u8", "npz": "digits_test.npz"}}

    mlp = common.make_model(mlp_graph(*train_mlp(x_train, y_train)), "digits MLP 64-64-10")
    failures = build_family("digits_mlp", mlp, x_train, x_test, y_test, (-1, 64), out, test_set)

    cnn_params = train_cnn(x_train, y_train)
    cnn = common.make_model(cnn_graph(cnn_params), "digits CNN conv3x3x16-maxpool-256-64-10")
    # The ONNX graph must compute what the numpy training computed.
    ref_logits, _ = cnn_forward(cnn_params, im2col(x_test))
    onnx_logits = common.session(cnn).run(["logits"], {"input": x_test.reshape(-1, 1, 8, 8)})[0]
    if not np.allclose(ref_logits, onnx_logits, atol=1e-4):
        failures.append("digits_cnn: ONNX graph disagrees with the numpy model it was exported from")
    failures += build_family("digits_cnn", cnn, x_train, x_test, y_test, (-1, 1, 8, 8), out, test_set)

    fixture = qgemm_fixture(mlp, x_train)
    ops = common.contrib_ops(fixture)
    if not ops:
        failures.append(f"{FIXTURE}: expected a {common.CONTRIB_DOMAIN} operator, found none")
    path = out / f"{FIXTURE}.onnx"
    onnx.save(fixture, path)
    acc = accuracy(path, x_test, y_test, exact=False)  # valid: onnxruntime runs it, tract cannot
    common.write_sidecar(
        fixture,
        path,
        {
            "source": SOURCE,
            "preprocessing": PREPROCESSING,
            "format": "qoperator-contrib",
            "quantization": "onnxruntime's default QOperator path (quantize_static, Gemm kept), uint8 activations, int8 weights",
            "contrib_operators": ops,
            "expected": "refused at upload: tract 0.23 does not run onnxruntime contrib operators",
            "onnxruntime_accuracy": round(acc, 2),
            "summary": f"negative fixture, holds {common.CONTRIB_DOMAIN} {', '.join(ops)} (onnxruntime: {acc:.2f}%)",
        },
    )
    return failures


if __name__ == "__main__":
    outputs = [f"{n}.{ext}" for n in MODEL_NAMES for ext in ("onnx", "json")] + DATA_FILES
    sys.exit(common.run("digits", __file__, outputs, MODEL_NAMES, build))
