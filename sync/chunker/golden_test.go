package chunker

// goldenSizes are the chunk sizes of pseudoRandom(42, 4 MiB), recorded with
// go-cdc-chunkers v1.1.0.
var goldenSizes = []int64{436374, 255401, 415036, 314603, 421941, 248099, 299128, 175797, 96780, 266563, 308441, 345807, 610334}

// goldenModelSizes are SplitModel's chunk sizes of tensorModel(200), a
// synthetic ONNX model (TestSplitModelIsolatesTensors); TestTensorSpansRealModels
// pins the chunk counts of the sample models (go-cdc-chunkers v1.1.0).
var goldenModelSizes = []int64{71732, 69889, 74719, 67115, 125455, 98017, 125446, 73396, 69198, 79621, 75053, 74287, 94711, 21717, 77676, 25644, 67291, 34287, 44099, 101174, 75850, 23867, 62234, 127175, 66507, 30387, 72888, 82286, 78673, 34261, 76752, 21049}
