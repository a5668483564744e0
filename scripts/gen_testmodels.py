#!/usr/bin/python3
"""Writes the tiny ONNX models that inference/ tests use into inference/testdata/,
and the rollout candidates that node/ tests use into node/testdata/rollout/.

Run with Debian's python (it has onnx and numpy):  /usr/bin/python3 scripts/gen_testmodels.py
The output is deterministic; the .onnx files are committed next to this script.
IR version 8 / opset 17: what onnx 1.12 writes, and well inside what ONNX Runtime 1.24 loads.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "inference", "testdata")
OPSET = [helper.make_opsetid("", 17)]

DTYPES = {
    "bool": TensorProto.BOOL,
    "uint8": TensorProto.UINT8,
    "uint16": TensorProto.UINT16,
    "uint32": TensorProto.UINT32,
    "uint64": TensorProto.UINT64,
    "int8": TensorProto.INT8,
    "int16": TensorProto.INT16,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "fp16": TensorProto.FLOAT16,
    "bf16": TensorProto.BFLOAT16,
    "fp32": TensorProto.FLOAT,
    "fp64": TensorProto.DOUBLE,
    "string": TensorProto.STRING,
}


def save(graph, name, out=OUT):
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="edge-node gen_testmodels.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = os.path.join(out, name + ".onnx")
    onnx.save(model, path)
    print("wrote", os.path.relpath(path))


def identity_models():
    # x [N, 2] -> y [N, 2]: one variable dim (output shape learned per input
    # shape) and one fixed dim (validated).
    for name, dt in DTYPES.items():
        g = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "identity_" + name,
            [helper.make_tensor_value_info("x", dt, ["N", 2])],
            [helper.make_tensor_value_info("y", dt, ["N", 2])],
        )
        save(g, "identity_" + name)


def scalar_model():
    # a: FP32 scalar (rank 0), b: FP32 [3]  ->  sum = a + b [3], twice = a + a (rank 0).
    # Every output shape is static, so Session preallocates all of them.
    g = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Add", ["a", "a"], ["twice"]),
        ],
        "scalar_add",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("twice", TensorProto.FLOAT, []),
        ],
    )
    save(g, "scalar_add")


def dynamic_model():
    # x [-1, -1] FP32 -> y = concat(x, x, axis 0) [2N, M]. The output's
    # metadata has no usable dims, so its shape is only known after a run.
    g = helper.make_graph(
        [helper.make_node("Concat", ["x", "x"], ["y"], axis=0)],
        "dynamic_concat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "M"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["Y0", "Y1"])],
    )
    save(g, "dynamic_concat")


def nonzero_model():
    # x [N] FP32 -> y = NonZero(x) INT64 [1, K]: K depends on the data, not
    # on the input shape, so an output shape learned from one run can be
    # wrong for the next run with the same input shape.
    g = helper.make_graph(
        [helper.make_node("NonZero", ["x"], ["y"])],
        "nonzero",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [1, "K"])],
    )
    save(g, "nonzero")


ROLLOUT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "node", "testdata", "rollout")


def rollout_models():
    """Rollout candidates: x FP32 [N, 8] -> y FP32 [N, 4] = tanh(x W + b).

    rollout_base   W, b from seed 1: the serving version.
    rollout_drift  W, b from seed 2: answers differently (fails a shadow drift gate).
    rollout_flaky  rollout_base's answers, but the run FAILS when x[0, 0] rounds down to 4:
                   it gathers element floor(max(x[:, 0])) of a 4-element constant, and index 4
                   is out of range (ONNX Runtime's Gather checks indices). Inputs with
                   x[0, 0] = i mod 5 fail on exactly 20 % of requests.
    rollout_slow   rollout_base's answers (exactly), plus a chain of 24 tanh(A W) matrix
                   products on a 256x256 matrix derived from the input, multiplied by 0 and
                   added: ~800 MFLOP per run (tens of ms on one core) against ~100 FLOP for
                   base, so its p99 is far more than 3x base's even when the box is loaded
                   (the input dependence keeps ONNX Runtime from constant-folding the chain).
    """
    def weights(seed):
        rng = np.random.default_rng(seed)
        return (numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W"),
                numpy_helper.from_array(rng.standard_normal((4,)).astype(np.float32), "b"))

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    base_nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["lin"]),
    ]

    for name, seed in (("rollout_base", 1), ("rollout_drift", 2)):
        g = helper.make_graph(base_nodes + [helper.make_node("Tanh", ["lin"], ["y"])], name, [x], [y], list(weights(seed)))
        save(g, name, ROLLOUT_OUT)

    def const(name, arr):
        return numpy_helper.from_array(np.asarray(arr), name)

    # flaky: y = tanh(lin) + 0 * Gather(table, floor(max(x[:, 0])))
    g = helper.make_graph(
        base_nodes + [
            helper.make_node("Tanh", ["lin"], ["t"]),
            helper.make_node("Slice", ["x", "s0", "s1", "s_axis"], ["col0"]),
            helper.make_node("ReduceMax", ["col0"], ["m"], keepdims=0),
            helper.make_node("Floor", ["m"], ["mf"]),
            helper.make_node("Cast", ["mf"], ["idx"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "idx"], ["picked"], axis=0),
            helper.make_node("Mul", ["picked", "zero"], ["nothing"]),
            helper.make_node("Add", ["t", "nothing"], ["y"]),
        ],
        "rollout_flaky", [x], [y],
        list(weights(1)) + [
            const("s0", np.array([0], np.int64)), const("s1", np.array([1], np.int64)), const("s_axis", np.array([1], np.int64)),
            const("table", np.array([1, 2, 3, 4], np.float32)), const("zero", np.array(0, np.float32)),
        ],
    )
    save(g, "rollout_flaky", ROLLOUT_OUT)

    # slow: y = tanh(lin) + 0 * sum(chain), chain = 24 x tanh(A @ W), A = sum(x) + C
    # (one W shared by every layer keeps the file small).
    size, depth = 256, 24
    rng = np.random.default_rng(3)
    inits = list(weights(1)) + [
        const("C", (rng.standard_normal((size, size)) * 0.1).astype(np.float32)),
        const("Wslow", (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)),
        const("zero", np.array(0, np.float32)),
    ]
    nodes = base_nodes + [
        helper.make_node("Tanh", ["lin"], ["t"]),
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Add", ["C", "s"], ["a0"]),
    ]
    for k in range(depth):
        nodes += [
            helper.make_node("MatMul", ["a%d" % k, "Wslow"], ["p%d" % k]),
            helper.make_node("Tanh", ["p%d" % k], ["a%d" % (k + 1)]),
        ]
    nodes += [
        helper.make_node("ReduceSum", ["a%d" % depth], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["t", "nothing"], ["y"]),
    ]
    save(helper.make_graph(nodes, "rollout_slow", [x], [y], inits), "rollout_slow", ROLLOUT_OUT)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(ROLLOUT_OUT, exist_ok=True)
    rollout_models()
    identity_models()
    scalar_model()
    dynamic_model()
    nonzero_model()
