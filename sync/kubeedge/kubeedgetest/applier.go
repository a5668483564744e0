// Package kubeedgetest has test helpers for the KubeEdge bridge: an Applier
// over the real model store and real ONNX Runtime sessions (StoreApplier),
// standing in for the node's reconciler, which is built elsewhere.
package kubeedgetest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
	"github.com/edgeai/edge-node/sync/kubeedge"
)

// Applied is one ApplyDesired call as StoreApplier received it.
type Applied struct {
	Source     string
	Generation uint64
	Models     map[string]kubeedge.DesiredModel
}

// StoreApplier implements kubeedge.Applier over a real store (t.TempDir())
// and real ONNX Runtime sessions. It does what the node's reconciler does,
// minus the network: a desired version that is not in the store is
// "downloaded" by importing it from Cloud (the stand-in for the node's
// chunked transfer), then activated (Loading → Warming → Active, the
// session created by ONNX Runtime from the materialised folder). A model
// absent from Cloud and the store is refused (UnknownModel); a version
// absent from both, UnknownVersion.
type StoreApplier struct {
	Store *store.Store
	env   *inference.Environment

	// mu guards everything below.
	mu sync.Mutex
	// Cloud is what the "transfer" can fetch: model → version → model.onnx.
	Cloud map[string]map[string]string
	// Calls records every ApplyDesired call.
	Calls    []Applied
	desired  map[string]string
	sessions []*inference.Session
	// Health, when set for a model, is reported as its health.
	Health map[string]*kubeedge.Health
}

// NewStoreApplier opens a store in a temporary folder; everything is closed
// at the end of the test.
func NewStoreApplier(t testing.TB) *StoreApplier {
	t.Helper()
	s, err := store.Open(context.Background(), store.DefaultOptions(t.TempDir()), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	a := &StoreApplier{Store: s, env: inferencetest.Env(t), Cloud: map[string]map[string]string{},
		desired: map[string]string{}, Health: map[string]*kubeedge.Health{}}
	t.Cleanup(func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, s := range a.sessions {
			s.Close()
		}
		if err := a.Store.Close(); err != nil {
			t.Error(err)
		}
	})
	return a
}

// Publish makes model/version fetchable (its model.onnx at path).
func (a *StoreApplier) Publish(model, version, path string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Cloud[model] == nil {
		a.Cloud[model] = map[string]string{}
	}
	a.Cloud[model][version] = path
}

// LastCall returns the last ApplyDesired call.
func (a *StoreApplier) LastCall() (Applied, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.Calls) == 0 {
		return Applied{}, false
	}
	return a.Calls[len(a.Calls)-1], true
}

// ApplyDesired implements kubeedge.Applier.
func (a *StoreApplier) ApplyDesired(ctx context.Context, source string, generation uint64, desired map[string]kubeedge.DesiredModel) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	cp := make(map[string]kubeedge.DesiredModel, len(desired))
	for k, v := range desired {
		cp[k] = v
	}
	a.Calls = append(a.Calls, Applied{Source: source, Generation: generation, Models: cp})
	var rej []kubeedge.Rejection
	for model, d := range desired {
		if err := a.reconcileLocked(ctx, model, d); err != nil {
			var r kubeedge.Rejection
			if errors.As(err, &r) {
				rej = append(rej, r)
				continue
			}
			return err
		}
	}
	if len(rej) > 0 {
		return &kubeedge.RejectedError{Rejections: rej}
	}
	return nil
}

func (a *StoreApplier) reconcileLocked(ctx context.Context, model string, d kubeedge.DesiredModel) error {
	mi, err := a.Store.Model(ctx, model)
	known := err == nil
	if err != nil && !errors.Is(err, models.ErrNotFound) {
		return err
	}
	if !known && a.Cloud[model] == nil {
		return kubeedge.Rejection{Property: kubeedge.PropertyName(model, kubeedge.FieldVersion), Model: model,
			Reason: kubeedge.ReasonUnknownModel, Detail: "no such model in the store or the cloud"}
	}
	if mi.Active == d.Version {
		a.desired[model] = d.Version
		return nil
	}
	if _, err := a.Store.Version(ctx, model, d.Version); errors.Is(err, models.ErrNotFound) {
		path, ok := a.Cloud[model][d.Version]
		if !ok {
			return kubeedge.Rejection{Property: kubeedge.PropertyName(model, kubeedge.FieldVersion), Model: model,
				Reason: kubeedge.ReasonUnknownVersion, Detail: fmt.Sprintf("no version %s", d.Version)}
		}
		// The "download": the node's transfer would fetch chunks; here the
		// file is imported from the stand-in cloud folder.
		if _, err := a.Store.Import(ctx, models.ImportRequest{Model: model, Version: d.Version, ModelFile: path}); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	a.desired[model] = d.Version
	if d.SHA256 != "" {
		v, err := a.Store.Version(ctx, model, d.Version)
		if err != nil {
			return err
		}
		for _, f := range v.Manifest.Files {
			if f.Role == "model" && f.SHA256 != d.SHA256 {
				_, err := a.Store.Fail(ctx, model, d.Version, models.ReasonChecksumMismatch, "model.onnx sha256 differs from the Device's")
				return err
			}
		}
	}
	// A load failure is not an error of the update: the store records
	// Failed(reason), the old Active keeps serving, and Status reports it.
	_, _ = a.Store.Activate(ctx, model, d.Version, &ortLoader{a: a})
	return nil
}

// Status implements kubeedge.Applier.
func (a *StoreApplier) Status(ctx context.Context) ([]kubeedge.ModelStatus, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ms, err := a.Store.Models(ctx)
	if err != nil {
		return nil, err
	}
	var out []kubeedge.ModelStatus
	for _, m := range ms {
		st := kubeedge.ModelStatus{Model: m.Name, Active: m.Active, Canary: m.Canary, Desired: a.desired[m.Name], Health: a.Health[m.Name]}
		for _, v := range m.Versions {
			if v.Version == m.Active {
				for _, f := range v.Manifest.Files {
					if f.Role == "model" {
						st.ActiveSHA256 = f.SHA256
					}
				}
			}
			if v.Version == st.Desired {
				st.State, st.Reason = v.State, v.Reason
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// ortLoader creates a real ONNX Runtime session for a version.
type ortLoader struct {
	a *StoreApplier
	s *inference.Session
}

func (l *ortLoader) Load(ctx context.Context, v models.VersionInfo, dir string) error {
	s, err := l.a.env.Load(ctx, inference.LoadSpec{Model: v.Model, Version: v.Version, Path: filepath.Join(dir, "model.onnx")})
	if err != nil {
		return err
	}
	l.s = s
	l.a.sessions = append(l.a.sessions, s)
	return nil
}

func (l *ortLoader) Warmup(ctx context.Context, v models.VersionInfo) (models.WarmupResult, error) {
	return models.WarmupResult{Provider: "cpu"}, nil
}

// CallsFrom returns the ApplyDesired calls from the n-th on, and the count.
func (a *StoreApplier) CallsFrom(n int) ([]Applied, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n > len(a.Calls) {
		n = len(a.Calls)
	}
	return append([]Applied(nil), a.Calls[n:]...), len(a.Calls)
}
