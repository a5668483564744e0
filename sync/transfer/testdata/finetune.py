# Write a "fine-tuned" copy of an ONNX model: perturb one weight tensor
# (the model stores weights as Constant nodes; initializers if it has them).
import sys, onnx, numpy as np
from onnx import numpy_helper
src, dst, name = sys.argv[1], sys.argv[2], sys.argv[3]
m = onnx.load(src)
def bump(t):
    a = numpy_helper.to_array(t)
    b = (a + np.float32(1e-3) * np.sign(a)).astype(a.dtype)
    t.CopyFrom(numpy_helper.from_array(b, t.name))
    return a.nbytes
for t in m.graph.initializer:
    if t.name == name:
        n = bump(t); break
else:
    for node in m.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            n = bump(node.attribute[0].t); break
    else:
        sys.exit(f"no tensor {name}")
onnx.save(m, dst)
print(f"changed {name}: {n} bytes")
