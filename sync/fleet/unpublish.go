package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/wire"
)

// ErrNotPublished: no retained manifest for the version.
var ErrNotPublished = errors.New("fleet: version not published")

// ErrDesired: the version is in some node's or group's desired state.
var ErrDesired = errors.New("fleet: version is desired")

// UnpublishStats says what Unpublish cleared and kept.
type UnpublishStats struct {
	// ChunksCleared are the version's chunks whose retained copies were
	// cleared; ChunksKept those another published manifest lists.
	ChunksCleared, ChunksKept int
	// BytesCleared is the size of the cleared chunks.
	BytesCleared int64
	// DesiredBy names the desired-state topics that ask for the version
	// (non-empty only with force).
	DesiredBy []string
}

// Unpublish removes model/version from the broker: it clears (an empty
// retained publish) the version's manifest, then every chunk of it that no
// other retained manifest lists. It refuses with ErrDesired while any
// retained node or group desired state asks for the version, unless force.
//
// Manifests are read without checking signatures: a chunk list is only used
// to keep chunks, so a forged manifest can make Unpublish keep more, never
// clear more. A retained manifest that does not decode lists nothing.
func Unpublish(ctx context.Context, link Link, tp wire.Topics, model, version string, force bool, quiet time.Duration) (UnpublishStats, error) {
	var st UnpublishStats
	if err := wire.ValidName(model); err != nil {
		return st, err
	}
	if err := wire.ValidName(version); err != nil {
		return st, err
	}
	for _, filter := range []string{tp.Root + "/nodes/+/desired", tp.Root + "/groups/+/desired"} {
		got, err := ReadRetained(ctx, link, filter, quiet)
		if err != nil {
			return st, err
		}
		for topic, b := range got {
			d, err := wire.DecodeDesired(b)
			if err != nil {
				continue // the nodes reject it too
			}
			if s, ok := d.Models[model]; ok && !s.Absent && s.Version == version {
				st.DesiredBy = append(st.DesiredBy, topic)
			}
		}
	}
	sort.Strings(st.DesiredBy)
	if len(st.DesiredBy) > 0 && !force {
		return st, fmt.Errorf("%w: %s %s is desired on %s (deploy another version there first, or force)",
			ErrDesired, model, version, strings.Join(st.DesiredBy, ", "))
	}
	manifests, err := ReadRetained(ctx, link, tp.Root+"/models/+/versions/+/manifest", quiet)
	if err != nil {
		return st, err
	}
	topic := tp.Manifest(model, version)
	b, ok := manifests[topic]
	if !ok {
		return st, fmt.Errorf("%w: no retained manifest on %s", ErrNotPublished, topic)
	}
	m, err := chunkList(b)
	if err != nil {
		return st, fmt.Errorf("fleet: manifest on %s: %w", topic, err)
	}
	keep := map[string]bool{}
	for other, ob := range manifests {
		if other == topic {
			continue
		}
		if om, err := chunkList(ob); err == nil {
			for sha := range ChunkSet(om) {
				keep[sha] = true
			}
		}
	}
	// The manifest first: a node that reads it after this finds none,
	// instead of a version whose chunks are going away.
	if err := link.Publish(ctx, topic, true, nil); err != nil {
		return st, err
	}
	seen := map[string]bool{}
	var pending []func(context.Context) error
	for _, f := range m.Files {
		for _, c := range f.Chunks {
			if seen[c.SHA256] {
				continue
			}
			seen[c.SHA256] = true
			if keep[c.SHA256] {
				st.ChunksKept++
				continue
			}
			pending = append(pending, link.PublishAsync(tp.Chunk(c.SHA256), true, nil))
			st.ChunksCleared++
			st.BytesCleared += c.Size
			if len(pending) >= 16 {
				if err := pending[0](ctx); err != nil {
					return st, err
				}
				pending = pending[1:]
			}
		}
	}
	for _, w := range pending {
		if err := w(ctx); err != nil {
			return st, err
		}
	}
	return st, nil
}

// chunkList decodes a retained signed manifest (at most
// wire.MaxMessageBytes) without verifying its signature.
func chunkList(b []byte) (models.Manifest, error) {
	if len(b) > wire.MaxMessageBytes {
		return models.Manifest{}, fmt.Errorf("%d bytes, over the %d-byte message limit", len(b), wire.MaxMessageBytes)
	}
	var sm models.SignedManifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sm); err != nil {
		return models.Manifest{}, err
	}
	return models.DecodeManifest(sm.Payload)
}

// RetainedVersion is what one published version costs the broker.
type RetainedVersion struct {
	Model, Version string
	// Bytes is the version's size (its files), Chunks its distinct chunks.
	Bytes  int64
	Chunks int
	// UnsharedBytes is the size of its chunks that no other retained
	// manifest lists: what Unpublish would clear.
	UnsharedBytes int64
	// Invalid is set when the retained manifest does not decode.
	Invalid error
}

// RetainedReport lists every retained manifest with its size and the bytes
// only it holds at the broker, sorted by model and version. Signatures are
// not checked (the report is about broker storage, not trust).
func RetainedReport(ctx context.Context, link Subscriber, tp wire.Topics, quiet time.Duration) ([]RetainedVersion, error) {
	manifests, err := ReadRetained(ctx, link, tp.Root+"/models/+/versions/+/manifest", quiet)
	if err != nil {
		return nil, err
	}
	var out []RetainedVersion
	users := map[string]int{} // chunk sha256 -> how many versions list it
	decoded := map[int]models.Manifest{}
	for topic, b := range manifests {
		model, version, err := tp.ParseManifest(topic)
		if err != nil {
			continue
		}
		rv := RetainedVersion{Model: model, Version: version}
		m, err := chunkList(b)
		if err != nil {
			rv.Invalid = err
		} else {
			decoded[len(out)] = m
			for sha := range ChunkSet(m) {
				users[sha]++
			}
		}
		out = append(out, rv)
	}
	for i, m := range decoded {
		seen := map[string]bool{}
		for _, f := range m.Files {
			out[i].Bytes += f.Size
			for _, c := range f.Chunks {
				if seen[c.SHA256] {
					continue
				}
				seen[c.SHA256] = true
				out[i].Chunks++
				if users[c.SHA256] == 1 {
					out[i].UnsharedBytes += c.Size
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Model != out[j].Model {
			return out[i].Model < out[j].Model
		}
		return out[i].Version < out[j].Version
	})
	return out, nil
}
