#!/usr/bin/python3
"""Writes the tiny ONNX models that inference/ tests use into inference/testdata/.

Run with Debian's python (it has onnx and numpy):  /usr/bin/python3 scripts/gen_testmodels.py
The output is deterministic; the .onnx files are committed next to this script.
IR version 8 / opset 17: what onnx 1.12 writes, and well inside what ONNX Runtime 1.24 loads.
"""
import os

import onnx
from onnx import TensorProto, helper

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


def save(graph, name):
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="edge-node gen_testmodels.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = os.path.join(OUT, name + ".onnx")
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


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    identity_models()
    scalar_model()
    dynamic_model()
    nonzero_model()
