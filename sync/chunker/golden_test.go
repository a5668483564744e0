package chunker

// goldenSizes are the chunk sizes of pseudoRandom(42, 4 MiB), recorded with
// go-cdc-chunkers v1.1.0.
var goldenSizes = []int64{436374, 255401, 415036, 314603, 421941, 248099, 299128, 175797, 96780, 266563, 308441, 345807, 610334}
