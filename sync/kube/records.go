package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/edgeai/edge-node/sync/kube/api/v1alpha1"
	"github.com/edgeai/edge-node/sync/rollout"
)

// statusRecords keeps each rollout's record in its ModelVersion's status
// (status.rollout, with the summary fields beside it), so the API server is
// the controller's only state and any replica resumes a rollout where the
// last leader left it. Reads go to the API server, not the informer cache:
// a tick must see the record its previous tick wrote. Writes are
// optimistic (resourceVersion) and retried on conflict.
type statusRecords struct {
	read       client.Reader
	write      client.Client
	namespaces []string // those List reads (nil: all)

	mu   sync.Mutex
	keys map[string]types.NamespacedName // rollout id → its ModelVersion
}

func newStatusRecords(read client.Reader, write client.Client, namespaces []string) *statusRecords {
	return &statusRecords{read: read, write: write, namespaces: namespaces, keys: map[string]types.NamespacedName{}}
}

// bind records which ModelVersion rollout id lives in (the reconciler
// binds each one it sees).
func (s *statusRecords) bind(id string, key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[id] = key
}

// unbind forgets rollout id (its ModelVersion is gone).
func (s *statusRecords) unbind(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, id)
}

func (s *statusRecords) key(id string) (types.NamespacedName, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[id]
	if !ok {
		return k, fmt.Errorf("rollout %s: no ModelVersion: %w", id, rollout.ErrNotFound)
	}
	return k, nil
}

// decodeRecord returns the record in mv's status (nil when none).
func decodeRecord(mv *v1alpha1.ModelVersion) (*rollout.Record, error) {
	if mv.Status.Rollout == nil || len(mv.Status.Rollout.Raw) == 0 {
		return nil, nil
	}
	var r rollout.Record
	if err := json.Unmarshal(mv.Status.Rollout.Raw, &r); err != nil {
		return nil, fmt.Errorf("ModelVersion %s/%s: status.rollout: %w", mv.Namespace, mv.Name, err)
	}
	return &r, nil
}

// put stores r in mv's status with the summary derived from it, and
// writes the status.
func (s *statusRecords) put(ctx context.Context, mv *v1alpha1.ModelVersion, r *rollout.Record) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	mv.Status.Rollout = &runtime.RawExtension{Raw: raw}
	mv.Status.RolloutID = r.Spec.ID
	summarize(mv, r, time.Now())
	return s.write.Status().Update(ctx, mv)
}

func (s *statusRecords) Create(ctx context.Context, r *rollout.Record) error {
	key, err := s.key(r.Spec.ID)
	if err != nil {
		return err
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var mv v1alpha1.ModelVersion
		if err := s.read.Get(ctx, key, &mv); err != nil {
			return err
		}
		if mv.Status.Rollout != nil {
			return fmt.Errorf("rollout %s: %w", r.Spec.ID, rollout.ErrExists)
		}
		return s.put(ctx, &mv, r)
	})
}

func (s *statusRecords) Get(ctx context.Context, id string) (*rollout.Record, error) {
	key, err := s.key(id)
	if err != nil {
		return nil, err
	}
	var mv v1alpha1.ModelVersion
	if err := s.read.Get(ctx, key, &mv); err != nil {
		return nil, err
	}
	r, err := decodeRecord(&mv)
	if err == nil && r == nil {
		err = fmt.Errorf("rollout %s: %w", id, rollout.ErrNotFound)
	}
	return r, err
}

func (s *statusRecords) List(ctx context.Context) ([]*rollout.Record, error) {
	var l v1alpha1.ModelVersionList
	if len(s.namespaces) == 0 {
		if err := s.read.List(ctx, &l); err != nil {
			return nil, err
		}
	}
	for _, ns := range s.namespaces {
		var one v1alpha1.ModelVersionList
		if err := s.read.List(ctx, &one, client.InNamespace(ns)); err != nil {
			return nil, err
		}
		l.Items = append(l.Items, one.Items...)
	}
	var out []*rollout.Record
	for i := range l.Items {
		r, err := decodeRecord(&l.Items[i])
		if err != nil {
			return nil, err
		}
		if r != nil {
			out = append(out, r)
		}
	}
	return out, nil
}

func (s *statusRecords) Update(ctx context.Context, id string, fn func(*rollout.Record) error) (*rollout.Record, error) {
	key, err := s.key(id)
	if err != nil {
		return nil, err
	}
	var out *rollout.Record
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var mv v1alpha1.ModelVersion
		if err := s.read.Get(ctx, key, &mv); err != nil {
			return err
		}
		r, err := decodeRecord(&mv)
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("rollout %s: %w", id, rollout.ErrNotFound)
		}
		if err := fn(r); err != nil {
			return err
		}
		out = r
		return s.put(ctx, &mv, r)
	})
	return out, err
}

// AcquireLease succeeds: the manager's leader election (a
// coordination.k8s.io Lease) is what keeps a second controller away, and
// only the leader reconciles.
func (s *statusRecords) AcquireLease(context.Context, string, string, time.Duration, time.Time) error {
	return nil
}

// ReleaseLease: see AcquireLease.
func (s *statusRecords) ReleaseLease(context.Context, string, string) error { return nil }
