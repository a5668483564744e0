package pipeline_test

import (
	"context"
	"testing"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/inference/pipeline"
)

// BenchmarkOCRPipeline: the whole pipeline on bare sessions (no HTTP),
// with the time of each stage per image.
func BenchmarkOCRPipeline(b *testing.B) {
	p, err := pipeline.NewOCRPipeline(sampleConfig(), dictionary(b))
	if err != nil {
		b.Fatal(err)
	}
	r := loadSessions(b)
	jpg := encodeJPEG(b, inferencetest.RenderText(b, 960, 400, 36, "Images in, answers out", "KServe v2 on the edge: 42 frames"))
	tm := pipeline.Timings{}
	b.ResetTimer()
	for range b.N {
		if _, err := p.Recognise(context.Background(), r, inference.HeapAllocator{}, jpg, tm); err != nil {
			b.Fatal(err)
		}
	}
	for _, s := range pipeline.Stages {
		b.ReportMetric(float64(tm[s].Microseconds())/float64(b.N), s+"-µs/op")
	}
}
