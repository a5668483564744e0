package models

// Manifest describes one model version as the cloud publishes it: the files
// that make it up, each named by sha256 and cut into content-defined chunks
// for transfer. It travels as the JSON payload of a SignedManifest.
type Manifest struct {
	// Protocol is the manifest format version (currently 1).
	Protocol int `json:"protocol"`
	// Model and Version name the model version.
	Model   string `json:"model"`
	Version string `json:"version"`
	// Created is when the version was published (RFC 3339).
	Created string `json:"created"`
	// Files are the version's files. Exactly one has Role "model" (the .onnx
	// graph); others are ONNX external-data files or configs.
	Files []FileRef `json:"files"`
	// Config is the optional per-model config (YAML, the same format as a
	// model repository's config.yaml).
	Config string `json:"config,omitempty"`
	// Golden are optional warm-up inputs with expected outputs.
	Golden []GoldenCase `json:"golden,omitempty"`
}

// FileRef is one file of a version.
type FileRef struct {
	// Path is the file's name inside the version folder ("model.onnx",
	// "weights.bin"); a plain relative path, no "..".
	Path   string     `json:"path"`
	Role   string     `json:"role"` // "model", "external_data", "config"
	SHA256 string     `json:"sha256"`
	Size   int64      `json:"size"`
	Chunks []ChunkRef `json:"chunks"`
}

// ChunkRef is one content-defined chunk of a file, in file order.
type ChunkRef struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// GoldenCase is one warm-up request and the outputs it must give. Tensors are
// in the KServe v2 JSON form; Tolerance is the largest absolute difference
// accepted for float outputs.
type GoldenCase struct {
	Inputs    []GoldenTensor `json:"inputs"`
	Outputs   []GoldenTensor `json:"outputs"`
	Tolerance float64        `json:"tolerance"`
}

// GoldenTensor is a small tensor in KServe v2 JSON form (flat data).
type GoldenTensor struct {
	Name     string    `json:"name"`
	Datatype string    `json:"datatype"`
	Shape    []int64   `json:"shape"`
	Data     []float64 `json:"data"`
}

// SignedManifest is what travels and what is stored: the manifest's exact
// JSON bytes, base64 in Payload, and an ed25519 signature over them by the
// key named KeyID.
type SignedManifest struct {
	Payload   []byte `json:"payload"`
	KeyID     string `json:"key_id"`
	Signature []byte `json:"signature"`
}
