"""Helpers shared by the reference-model builders (digits.py, minilm.py).

Every model file the appliance's tests load is made here, so the rules tract 0.23 needs are
applied in one place: ONNX opset 17 with IR version 8, only standard-domain operators unless a
file is meant to be refused, and a JSON sidecar beside each model describing its tensors in Open
Inference Protocol terms and the figures it was checked against.
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import quant_pre_process

# What tract 0.23 reads safely (it handles newer opsets only partly).
OPSET = 17
IR_VERSION = 8

CONTRIB_DOMAIN = "com.microsoft"

# ONNX element types spelled as the Open Inference Protocol's datatypes.
OIP_DATATYPES = {
    TensorProto.FLOAT: "FP32",
    TensorProto.FLOAT16: "FP16",
    TensorProto.DOUBLE: "FP64",
    TensorProto.INT8: "INT8",
    TensorProto.INT16: "INT16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.UINT8: "UINT8",
    TensorProto.BOOL: "BOOL",
    TensorProto.STRING: "BYTES",
}


def make_model(graph: onnx.GraphProto, doc: str) -> onnx.ModelProto:
    """Wraps a graph written with onnx.helper into a checked opset-17 / IR-8 model."""
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="appliance-reference-models",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def finalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Holds a file written by onnxruntime's quantizer to what tract 0.23 expects.

    Fails if the quantizer moved the opset, pins the IR version, and drops opset imports of
    domains no node uses (a loader that refuses contrib models by their imports would refuse a
    runnable model). onnxruntime 1.32 does neither to these models; this guards upgrades.
    """
    used = {node.domain for node in model.graph.node}
    kept = [o for o in model.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx_opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if onnx_opset != OPSET:
        raise SystemExit(f"quantizer changed the opset to {onnx_opset}; tract needs {OPSET}")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def op_types(model: onnx.ModelProto) -> set[str]:
    return {node.op_type for node in model.graph.node}


def contrib_ops(model: onnx.ModelProto) -> list[str]:
    return sorted({n.op_type for n in model.graph.node if n.domain == CONTRIB_DOMAIN})


def require_ops(model: onnx.ModelProto, name: str, present=(), absent_domain=True) -> None:
    """Fails the build when a file lacks the operators its format promises, or (for every file
    but the negative fixture) holds an onnxruntime contrib operator tract cannot run."""
    missing = set(present) - op_types(model)
    if missing:
        raise SystemExit(f"{name}: expected operators {sorted(missing)} are missing")
    if absent_domain and contrib_ops(model):
        raise SystemExit(f"{name}: contains {CONTRIB_DOMAIN} operators {contrib_ops(model)}")


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrites each Gemm (alpha=beta=1, constant B) as MatMul + Add.

    onnxruntime quantizes Gemm in QOperator form only as the contrib op com.microsoft.QGemm, and
    not at all in dynamic form; MatMul becomes the standard QLinearMatMul / MatMulInteger.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {t.name: t for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type != "Gemm":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
            raise SystemExit(f"gemm_to_matmul: unsupported Gemm attributes {attrs}")
        a, b, c = node.input
        if attrs.get("transB", 0):
            w = inits[b]
            w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w).T.copy(), w.name))
        product = node.output[0] + "_matmul"
        nodes.append(helper.make_node("MatMul", [a, b], [product], name=node.name + "_matmul"))
        nodes.append(helper.make_node("Add", [product, c], list(node.output), name=node.name + "_bias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def preprocess(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's pre-quantization shape inference, without its graph optimizer (which would
    fuse nodes into contrib operators)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pre.onnx"
        quant_pre_process(model, out, skip_optimization=True)
        return onnx.load(out)


def via_file(quantize, model: onnx.ModelProto, **kwargs) -> onnx.ModelProto:
    """Runs an onnxruntime quantize_* function file to file (in-memory input models trip its
    external-data handling) and returns the result."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.onnx", Path(tmp) / "q.onnx"
        onnx.save(model, src)
        quantize(src, out, **kwargs)
        return onnx.load(out)


def session(model: Path | onnx.ModelProto) -> ort.InferenceSession:
    """A one-thread CPU session (modest CPU use, results that do not vary with the core count)
    on a saved file or an in-memory model."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def exact_integer(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with every MatMulInteger and ConvInteger computed exactly in float.

    Why: onnxruntime's u8*s8 kernels on x86 CPUs without VNNI (plain AVX2) add pairs of
    products in saturating 16-bit lanes, so on such a CPU its int8 results drift from the
    file's exact integer semantics (int8 MiniLM's cosine to float fell from 0.993 to 0.987).
    The products are integers and the float sums below hold them exactly, so this rewrite
    gives the file's true outputs on any CPU: the reference our own engine is checked
    against, whatever the machine. Cast back to int32 keeps the rest of the graph as it was.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = []
    for i, node in enumerate(model.graph.node):
        if node.op_type not in ("MatMulInteger", "ConvInteger") or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        p = f"_exact{i}"

        # float64 for MatMul (MiniLM's sums pass 2**24); onnxruntime has no float64 Conv, and
        # a small conv's sums stay far below 2**24, where float32 is exact too.
        exact_type = TensorProto.DOUBLE if node.op_type == "MatMulInteger" else TensorProto.FLOAT

        def centred(value, zero_point, tag, axis_1d):
            """(value - zero_point) as float64. A per-column B zero point ([N]) broadcasts as
            is; a per-output-channel conv weight zero point ([C]) becomes [C, 1, 1, 1]."""
            cast = helper.make_node("Cast", [value], [f"{p}_{tag}"], to=exact_type)
            nodes.append(cast)
            if not zero_point:
                return f"{p}_{tag}"
            nodes.append(helper.make_node("Cast", [zero_point], [f"{p}_{tag}_zp"], to=exact_type))
            zp = f"{p}_{tag}_zp"
            if axis_1d is not None:
                axes = f"{p}_{tag}_axes"
                model.graph.initializer.append(numpy_helper.from_array(np.array(axis_1d, dtype=np.int64), axes))
                nodes.append(helper.make_node("Unsqueeze", [zp, axes], [f"{zp}_u"]))
                zp = f"{zp}_u"
            nodes.append(helper.make_node("Sub", [f"{p}_{tag}", zp], [f"{p}_{tag}_c"]))
            return f"{p}_{tag}_c"

        inputs = list(node.input) + [""] * (4 - len(node.input))
        a_zp, b_zp = inputs[2], inputs[3]
        if node.op_type == "MatMulInteger":
            a = centred(inputs[0], a_zp, "a", None)
            b = centred(inputs[1], b_zp, "b", None)
            nodes.append(helper.make_node("MatMul", [a, b], [f"{p}_y"]))
        else:
            a = centred(inputs[0], a_zp, "a", None)
            b = centred(inputs[1], b_zp, "b", [1, 2, 3] if _rank1(model, b_zp) else None)
            nodes.append(helper.make_node("Conv", [a, b], [f"{p}_y"], **{x.name: helper.get_attribute_value(x) for x in node.attribute}))
        nodes.append(helper.make_node("Cast", [f"{p}_y"], list(node.output), to=TensorProto.INT32))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def exact_reference(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model's int8 semantics on float kernels, the same on every CPU: MatMulInteger and
    ConvInteger as in exact_integer, and QLinearMatMul/QLinearConv as DequantizeLinear, the
    float op and QuantizeLinear (what the ONNX spec defines them as, up to float rounding before
    the final requantisation, i.e. at most one output quantisation step). Run it with graph
    optimisations off (reference_session), or onnxruntime fuses the QDQ pairs straight back into
    the integer kernels this avoids."""
    model = exact_integer(model)
    nodes = []
    for i, node in enumerate(model.graph.node):
        if node.op_type not in ("QLinearMatMul", "QLinearConv") or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        p = f"_ref{i}"
        x, xs, xzp, w, ws, wzp, ys, yzp = list(node.input[:8])
        # A per-channel weight scale dequantises along the output channels: axis 1 of a
        # MatMul's [K, N] weight, axis 0 of a Conv's [M, C, kh, kw].
        axis = {"axis": 1 if node.op_type == "QLinearMatMul" else 0} if _rank1(model, ws) else {}
        nodes.append(helper.make_node("DequantizeLinear", [x, xs, xzp], [f"{p}_x"]))
        nodes.append(helper.make_node("DequantizeLinear", [w, ws, wzp], [f"{p}_w"], **axis))
        if node.op_type == "QLinearMatMul":
            nodes.append(helper.make_node("MatMul", [f"{p}_x", f"{p}_w"], [f"{p}_y"]))
        else:
            conv_inputs = [f"{p}_x", f"{p}_w"]
            if len(node.input) > 8 and node.input[8]:
                # The int32 bias has scale x_scale * w_scale.
                nodes.append(helper.make_node("Cast", [node.input[8]], [f"{p}_b"], to=TensorProto.FLOAT))
                nodes.append(helper.make_node("Mul", [xs, ws], [f"{p}_bs"]))
                nodes.append(helper.make_node("Mul", [f"{p}_b", f"{p}_bs"], [f"{p}_bf"]))
                conv_inputs.append(f"{p}_bf")
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            nodes.append(helper.make_node("Conv", conv_inputs, [f"{p}_y"], **attrs))
        nodes.append(helper.make_node("QuantizeLinear", [f"{p}_y", ys, yzp], list(node.output)))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def reference_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """One-thread onnxruntime session computing `exact_reference(model)` without fusions."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(exact_reference(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _rank1(model: onnx.ModelProto, name: str) -> bool:
    """Whether initializer `name` is a vector of more than one element."""
    for t in model.graph.initializer:
        if t.name == name:
            return len(t.dims) == 1 and t.dims[0] > 1
    return False


def tensor_specs(values) -> list[dict]:
    """Graph inputs/outputs as name, OIP datatype and shape (-1 for a symbolic dimension)."""
    specs = []
    for v in values:
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        specs.append({"name": v.name, "datatype": OIP_DATATYPES[t.elem_type], "shape": shape})
    return specs


def write_sidecar(model: onnx.ModelProto, path: Path, sidecar: dict) -> None:
    """Writes <name>.json beside a saved model; its tensors are read from the model itself."""
    meta = {
        "file": path.name,
        "inputs": tensor_specs(model.graph.input),
        "outputs": tensor_specs(model.graph.output),
        "opset": OPSET,
        "ir_version": model.ir_version,
        "operators": sorted(op_types(model)),
        **sidecar,
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")


def up_to_date(outputs: list[Path], sources: list[Path]) -> bool:
    """True when every output exists and is newer than every source."""
    if not all(p.exists() for p in outputs):
        return False
    newest_source = max(p.stat().st_mtime for p in sources)
    return min(p.stat().st_mtime for p in outputs) > newest_source


def print_summaries(out_dir: Path, names: list[str], cached: bool) -> None:
    """One line per model, built from its sidecar, so a cached run reports the same figures."""
    for name in names:
        meta = json.loads((out_dir / f"{name}.json").read_text())
        suffix = "  (cached)" if cached else ""
        print(f"{name:30s} {meta['format']:17s} {meta['summary']}{suffix}")
    sys.stdout.flush()


def run(family: str, module_file: str, outputs: list[str], names: list[str], build) -> int:
    """Command-line entry of a model family: `python FAMILY.py OUT_DIR [--force]`.

    Skips the build when its outputs are newer than the sources (the family's script, this
    file, the package lock). A stamp written only after every check passed makes a failed or
    interrupted build run again next time. build(out_dir) returns the failed checks.
    """
    out, force = Path(sys.argv[1]), "--force" in sys.argv[2:]
    here = Path(__file__).resolve().parent
    sources = [Path(module_file).resolve(), here / "common.py", here / "requirements.txt"]
    stamp = out / f".{family}.ok"
    if not force and up_to_date([out / o for o in outputs] + [stamp], sources):
        print_summaries(out, names, cached=True)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    failures = build(out)
    for name in names:
        meta = json.loads((out / f"{name}.json").read_text())
        found = contrib_ops(onnx.load(out / meta["file"], load_external_data=False))
        if found and meta["format"] != "qoperator-contrib":
            failures.append(f"{name}: holds {CONTRIB_DOMAIN} operators {found}")
    print_summaries(out, names, cached=False)
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    if failures:
        return 1
    stamp.touch()
    return 0
