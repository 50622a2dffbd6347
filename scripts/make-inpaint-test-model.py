#!/usr/bin/env python3
"""Writes a small inpainting model with the signature of the LaMa ONNX
exports (Carve/LaMa-ONNX's lama_fp32.onnx):

    image  float32 [1, 3, 512, 512]  RGB in 0..1
    mask   float32 [1, 1, 512, 512]  1 = repaint
    output float32 [1, 3, 512, 512]  RGB in 0..255

What it paints: every masked pixel takes the mean colour of the unmasked
pixels around it (a crude but real fill). Unmasked pixels come back 20 %
darker: LaMa returns them nearly, never exactly, as they were, and the
darkening makes the worker's blend outside the mask visible to the tests. Built with the `onnx` package and checked with its checker;
scripts/fetch-test-models runs it. Usage: make-inpaint-test-model.py OUT
"""
import sys

import onnx
from onnx import TensorProto, helper

SIDE = 512


def build():
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIDE, SIDE])
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, SIDE, SIDE])
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, SIDE, SIDE])
    consts = [
        helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("tiny", TensorProto.FLOAT, [], [1e-6]),
        helper.make_tensor("byte", TensorProto.FLOAT, [], [255.0]),
        helper.make_tensor("dim", TensorProto.FLOAT, [], [0.8]),
        helper.make_tensor("hw", TensorProto.INT64, [2], [2, 3]),
    ]
    nodes = [
        helper.make_node("Sub", ["one", "mask"], ["keep"]),
        helper.make_node("Mul", ["image", "keep"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "hw"], ["colour_sum"], keepdims=1),
        helper.make_node("ReduceSum", ["keep", "hw"], ["kept_count"], keepdims=1),
        helper.make_node("Max", ["kept_count", "tiny"], ["count"]),
        helper.make_node("Div", ["colour_sum", "count"], ["mean"]),
        helper.make_node("Mul", ["mask", "mean"], ["fill"]),
        helper.make_node("Mul", ["kept", "dim"], ["kept_dim"]),
        helper.make_node("Add", ["kept_dim", "fill"], ["unit"]),
        helper.make_node("Mul", ["unit", "byte"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "mean-fill-inpaint", [image, mask], [output], consts)
    model = helper.make_model(
        graph,
        producer_name="studio-worker tests",
        opset_imports=[helper.make_opsetid("", 17)],
    )
    # IR 8 / opset 17: loadable by every ONNX Runtime the runner accepts (1.20+).
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    onnx.save(build(), sys.argv[1])
