package node

import (
	"net/http"
	"testing"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
)

// The daemon's tests talk to its KServe v2 API through the test client in
// node/kserve/kservetest; these short names are what they called it by
// while the frontend lived in this package.

const headerContentLength = kservetest.HeaderContentLength

func sileroInputs() []inference.Tensor     { return kservetest.SileroInputs() }
func detInput(size int) []inference.Tensor { return kservetest.DetInput(size) }
func f32le(fs ...float32) []byte           { return kservetest.F32LE(fs...) }

func binaryRequest(t testing.TB, id string, ins []inference.Tensor, binaryOut bool) ([]byte, int) {
	t.Helper()
	return kservetest.BinaryRequest(t, id, ins, binaryOut)
}

func parseResponse(t testing.TB, header http.Header, body []byte) kservetest.Response {
	t.Helper()
	return kservetest.ParseResponse(t, header, body)
}
