package models_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
	"github.com/edgeai/edge-node/models/testsuite"
)

func cachedModel(b *testing.B, name string) string {
	p := filepath.Join("..", ".cache", "models", name, "1", "model.onnx")
	if _, err := os.Stat(p); err != nil {
		b.Skipf("%s not fetched (scripts/setup.sh): %v", p, err)
	}
	return p
}

func openBench(b *testing.B, opts store.Options) *store.Store {
	s, err := store.Open(context.Background(), opts, zerolog.Nop(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkImport compares Store.Import (copy + sha256 + fsync + rename +
// catalog transaction) with `cp` followed by `sha256sum` of the same file,
// run through exec in the same loop. Reported: MB/s of each and the ratio
// import_time / (cp+sha256sum time).
func BenchmarkImport(b *testing.B) {
	gen := filepath.Join(b.TempDir(), "gen100m.onnx")
	files := map[string]func(b *testing.B) string{
		"ppocr_det": func(b *testing.B) string { return cachedModel(b, "ppocr_det") },
		"gen100MB": func(b *testing.B) string {
			if _, err := os.Stat(gen); err != nil {
				buf := make([]byte, 100<<20)
				rand.Read(buf)
				if err := os.WriteFile(gen, buf, 0o644); err != nil {
					b.Fatal(err)
				}
			}
			return gen
		},
	}
	for _, name := range []string{"ppocr_det", "gen100MB"} {
		b.Run(name, func(b *testing.B) {
			src := files[name](b)
			fi, _ := os.Stat(src)
			ctx := context.Background()
			var storeDur, cpDur time.Duration
			b.SetBytes(fi.Size())
			for i := 0; b.Loop(); i++ {
				root := b.TempDir()
				s := openBench(b, store.DefaultOptions(filepath.Join(root, "store")))
				t0 := time.Now()
				if _, err := s.Import(ctx, models.ImportRequest{Model: "m", Version: fmt.Sprint(i + 1), ModelFile: src}); err != nil {
					b.Fatal(err)
				}
				storeDur += time.Since(t0)
				dst := filepath.Join(root, "copy.onnx")
				t0 = time.Now()
				if out, err := exec.Command("cp", src, dst).CombinedOutput(); err != nil {
					b.Fatalf("cp: %v %s", err, out)
				}
				if out, err := exec.Command("sha256sum", dst).CombinedOutput(); err != nil {
					b.Fatalf("sha256sum: %v %s", err, out)
				}
				cpDur += time.Since(t0)
				s.Close()
			}
			n := float64(b.N)
			mb := float64(fi.Size()) / 1e6
			b.ReportMetric(mb/(storeDur.Seconds()/n), "import_MB/s")
			b.ReportMetric(mb/(cpDur.Seconds()/n), "cp+sha256sum_MB/s")
			b.ReportMetric(storeDur.Seconds()/cpDur.Seconds(), "import/cp_ratio")
		})
	}
}

// BenchmarkTransition is the cost of one state transition: one bbolt write
// transaction with its outbox report, fsync'd on commit (Active ⇄ Retired
// through Activate of a still-loaded version: two versions change state per
// op, in one transaction).
func BenchmarkTransition(b *testing.B) {
	ctx := context.Background()
	s := openBench(b, store.DefaultOptions(b.TempDir()))
	src := b.TempDir()
	for _, v := range []string{"1", "2"} {
		if _, err := s.Import(ctx, models.ImportRequest{Model: "m", Version: v, ModelFile: testsuite.WriteFile(b, src, v, 1024)}); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Activate(ctx, "m", v, &testsuite.Loader{}); err != nil {
			b.Fatal(err)
		}
	}
	vers := []string{"1", "2"}
	for i := 0; b.Loop(); i++ {
		if _, err := s.Activate(ctx, "m", vers[i%2], nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBootCheck is Boot over three Active cached models (silero_vad,
// ppocr_det, ppocr_cls), with the size check and with a full re-hash.
func BenchmarkBootCheck(b *testing.B) {
	for _, policy := range []struct {
		name string
		p    store.VerifyPolicy
	}{{"size", store.VerifySize}, {"full", store.VerifyFull}} {
		b.Run(policy.name, func(b *testing.B) {
			ctx := context.Background()
			opts := store.DefaultOptions(b.TempDir())
			opts.Verify = policy.p
			s := openBench(b, opts)
			var total int64
			for _, name := range []string{"silero_vad", "ppocr_det", "ppocr_cls"} {
				p := cachedModel(b, name)
				fi, _ := os.Stat(p)
				total += fi.Size()
				if _, err := s.Import(ctx, models.ImportRequest{Model: name, Version: "1", ModelFile: p}); err != nil {
					b.Fatal(err)
				}
				if _, err := s.Activate(ctx, name, "1", &testsuite.Loader{}); err != nil {
					b.Fatal(err)
				}
			}
			if policy.p == store.VerifyFull {
				b.SetBytes(total)
			}
			for b.Loop() {
				rep, err := s.Boot(ctx)
				if err != nil || len(rep.Serve) != 3 {
					b.Fatalf("boot: %v, serve %d", err, len(rep.Serve))
				}
			}
		})
	}
}
