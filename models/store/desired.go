package store

import (
	"context"

	"github.com/edgeai/edge-node/models/catalog"
)

// SetDesiredGeneration records the desired-state generation last accepted
// from source (the cloud link's node topic, a group topic, a KubeEdge
// bridge), in one catalog transaction.
func (s *Store) SetDesiredGeneration(ctx context.Context, source string, gen uint64) error {
	return s.cat.Update(ctx, func(tx *catalog.Tx) error { return tx.SetDesiredGeneration(source, gen) })
}

// DesiredGenerations returns the last accepted generation of every source.
func (s *Store) DesiredGenerations(ctx context.Context) (map[string]uint64, error) {
	var out map[string]uint64
	err := s.cat.View(ctx, func(tx *catalog.Tx) error {
		var err error
		out, err = tx.DesiredGenerations()
		return err
	})
	return out, err
}

// SetKeyList stores the signed key list the node put in force, as
// received, so that a restart keeps its revocations and its version.
func (s *Store) SetKeyList(ctx context.Context, b []byte) error {
	return s.cat.Update(ctx, func(tx *catalog.Tx) error { return tx.SetKeyList(b) })
}

// KeyList returns the signed key list stored by SetKeyList, nil if none.
func (s *Store) KeyList(ctx context.Context) ([]byte, error) {
	var b []byte
	err := s.cat.View(ctx, func(tx *catalog.Tx) error { b = tx.KeyList(); return nil })
	return b, err
}
