package node

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
	"github.com/edgeai/edge-node/sync/wire"
)

// trust is the node's trust in signing keys: the keyring that verifies
// manifests and signed desired state (the store and the link share it), and
// the root keys that sign key lists.
type trust struct {
	ring  *models.Keyring
	base  models.KeySet // the configured keys, under the key list's revocations
	roots models.KeySet
}

func newTrust(cfg Config) (trust, error) {
	base, err := trustedKeys(cfg)
	if err != nil {
		return trust{}, err
	}
	roots, err := rootKeys(cfg)
	if err != nil {
		return trust{}, err
	}
	return trust{ring: models.NewKeyring(base, nil), base: base, roots: roots}, nil
}

// load puts the key list the store holds back in force, so that a node
// that boots offline keeps its revocations and refuses older lists. A list
// that no configured root key verifies any more (the roots changed) is
// logged and left out.
func (t trust) load(ctx context.Context, st *store.Store, log zerolog.Logger) error {
	b, err := st.KeyList(ctx)
	if err != nil || b == nil {
		return err
	}
	l, err := wire.DecodeKeyList(b, t.roots)
	if err != nil {
		log.Warn().Err(err).Msg("stored key list not verified by the configured root keys; not in force")
		return nil
	}
	if err := t.ring.SetList(l.Trust()); err != nil {
		return err
	}
	log.Info().Uint64("key_list_version", l.Version).Str("expires", l.Expires).Int("keys", len(l.Keys)).
		Int("revoked", len(l.Revoked)).Bool("expired", l.Expired(time.Now())).Msg("key list in force")
	return nil
}
