package inference

// DataType is a tensor element type, named as in the KServe Open Inference
// Protocol v2 (with Triton's BF16).
type DataType uint8

// The element types that ONNX Runtime and the protocol share.
const (
	Invalid DataType = iota
	Bool
	Uint8
	Uint16
	Uint32
	Uint64
	Int8
	Int16
	Int32
	Int64
	FP16
	BF16
	FP32
	FP64
	Bytes // variable-length byte strings (ONNX string tensors)
)

var dataTypeNames = [...]string{
	Invalid: "INVALID",
	Bool:    "BOOL",
	Uint8:   "UINT8",
	Uint16:  "UINT16",
	Uint32:  "UINT32",
	Uint64:  "UINT64",
	Int8:    "INT8",
	Int16:   "INT16",
	Int32:   "INT32",
	Int64:   "INT64",
	FP16:    "FP16",
	BF16:    "BF16",
	FP32:    "FP32",
	FP64:    "FP64",
	Bytes:   "BYTES",
}

var dataTypeSizes = [...]int{
	Bool: 1, Uint8: 1, Uint16: 2, Uint32: 4, Uint64: 8,
	Int8: 1, Int16: 2, Int32: 4, Int64: 8,
	FP16: 2, BF16: 2, FP32: 4, FP64: 8,
}

// String returns the protocol name of d ("FP32", "BYTES", ...).
func (d DataType) String() string {
	if int(d) < len(dataTypeNames) {
		return dataTypeNames[d]
	}
	return dataTypeNames[Invalid]
}

// Size is the number of bytes one element takes in a raw tensor; 0 for Bytes
// and Invalid.
func (d DataType) Size() int {
	if int(d) < len(dataTypeSizes) {
		return dataTypeSizes[d]
	}
	return 0
}

// ParseDataType maps a protocol name to a DataType. Names are case-sensitive,
// as in the protocol.
func ParseDataType(s string) (DataType, bool) {
	for i, n := range dataTypeNames {
		if i != int(Invalid) && n == s {
			return DataType(i), true
		}
	}
	return Invalid, false
}
