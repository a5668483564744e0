// Package fleet is the cloud side of the link, used by edgectl (and later the
// rollout controller): publish a model version (chunks, then its signed
// manifest, all retained, once for the whole fleet), write desired state with
// the next generation, and read nodes' status and presence.
package fleet

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"time"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/chunker"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/wire"
)

// FileSpec is one local file to publish as part of a version.
type FileSpec struct {
	Path string // local path
	Name string // path in the manifest ("model.onnx")
	Role string // wire.RoleModel, RoleExternalData, RoleConfig
}

// PublishOptions tune PublishModel.
type PublishOptions struct {
	// Skip lists chunks already retained at the broker (e.g. those of the
	// previous version's manifest): they are not sent again.
	Skip map[string]bool
	// Pipeline is how many chunk publishes may await their PUBACK (default 16).
	Pipeline int
	// Progress is called after each chunk is handed to the broker with the
	// bytes done so far (sent or skipped) and the total.
	Progress func(done, total int64)
	// Config is the optional per-model config (YAML) put in the manifest.
	Config string
	// Lineage is the optional lineage put in the manifest (signed with it).
	Lineage *models.Lineage
}

// PublishStats counts what PublishModel sent.
type PublishStats struct {
	Chunks, ChunksSkipped int
	BytesSent, BytesTotal int64
	Elapsed               time.Duration
}

// Publisher is what publishing needs from the MQTT session (*mqttlink.Link).
type Publisher interface {
	Publish(ctx context.Context, topic string, retained bool, payload []byte) error
	PublishAsync(topic string, retained bool, payload []byte) func(context.Context) error
}

// PublishModel chunks files (chunker.File: an ONNX model is cut at the
// edges of its tensors), publishes every chunk (retained, QoS 1) on its
// content-addressed topic, then the signed manifest (retained) — in that
// order, so a node that sees the manifest finds every chunk. A chunk shared by
// files or already in opts.Skip is sent once or not at all.
func PublishModel(ctx context.Context, pub Publisher, t wire.Topics, model, version string, files []FileSpec,
	key ed25519.PrivateKey, opts PublishOptions) (models.Manifest, PublishStats, error) {
	start := time.Now()
	var st PublishStats
	if opts.Pipeline <= 0 {
		opts.Pipeline = 16
	}
	m := models.Manifest{Protocol: wire.Protocol, Model: model, Version: version,
		Created: time.Now().UTC().Format(time.RFC3339), Config: opts.Config, Lineage: opts.Lineage}
	// Pass 1: chunk (cheap, local) to learn the total and build the manifest.
	for _, fs := range files {
		ref, err := chunker.File(fs.Path, fs.Name, fs.Role, nil)
		if err != nil {
			return m, st, err
		}
		m.Files = append(m.Files, ref)
		st.BytesTotal += ref.Size
	}
	if err := wire.ValidateManifest(m, wire.DefaultMaxModelBytes); err != nil {
		return m, st, err
	}
	signed, err := wire.SignManifest(m, key)
	if err != nil {
		return m, st, err
	}
	smJSON, err := json.Marshal(signed)
	if err != nil {
		return m, st, err
	}
	if len(smJSON) > wire.MaxMessageBytes {
		return m, st, fmt.Errorf("fleet: signed manifest is %d bytes, over the %d-byte message limit (model too large for protocol v1)", len(smJSON), wire.MaxMessageBytes)
	}
	// Pass 2: publish chunks, re-reading the files (keeps memory at one window).
	sent := map[string]bool{}
	var pending []func(context.Context) error
	var done int64
	for _, fs := range files {
		_, err := chunker.File(fs.Path, fs.Name, fs.Role, func(c models.ChunkRef, _ int64, data []byte) error {
			done += c.Size
			if opts.Skip[c.SHA256] || sent[c.SHA256] {
				if !sent[c.SHA256] {
					st.ChunksSkipped++
				}
				if opts.Progress != nil {
					opts.Progress(done, st.BytesTotal)
				}
				return nil
			}
			sent[c.SHA256] = true
			// data aliases the chunker's buffer: paho keeps the slice until sent.
			pending = append(pending, pub.PublishAsync(t.Chunk(c.SHA256), true, append([]byte(nil), data...)))
			st.Chunks++
			st.BytesSent += c.Size
			if len(pending) >= opts.Pipeline {
				if err := pending[0](ctx); err != nil {
					return err
				}
				pending = pending[1:]
			}
			if opts.Progress != nil {
				opts.Progress(done, st.BytesTotal)
			}
			return nil
		})
		if err != nil {
			return m, st, fmt.Errorf("fleet: publish %s: %w", fs.Path, err)
		}
	}
	for _, w := range pending {
		if err := w(ctx); err != nil {
			return m, st, fmt.Errorf("fleet: publish chunk: %w", err)
		}
	}
	if err := pub.Publish(ctx, t.Manifest(model, version), true, smJSON); err != nil {
		return m, st, err
	}
	st.Elapsed = time.Since(start)
	return m, st, nil
}

// ChunkSet returns the set of chunk names in m (for PublishOptions.Skip).
func ChunkSet(m models.Manifest) map[string]bool {
	s := map[string]bool{}
	for _, f := range m.Files {
		for _, c := range f.Chunks {
			s[c.SHA256] = true
		}
	}
	return s
}

var _ Publisher = (*mqttlink.Link)(nil)
