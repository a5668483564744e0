package catalog

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/edgeai/edge-node/models"
)

// Desired-state generations accepted per source live in the meta bucket
// under "desired/<source>" → uint64 big-endian, so that a restart does not
// re-accept a stale message. A source is a name such as "node",
// "group/cams" or "kubeedge" (1–128 printable bytes, no spaces).
const desiredPrefix = "desired/"

func validSource(s string) error {
	if s == "" || len(s) > 128 || strings.ContainsAny(s, " \t\r\n\x00") {
		return fmt.Errorf("desired-state source %.40q: %w", s, models.ErrInvalidArgument)
	}
	return nil
}

// SetDesiredGeneration records the generation last accepted from source.
func (t *Tx) SetDesiredGeneration(source string, gen uint64) error {
	if err := validSource(source); err != nil {
		return err
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], gen)
	return t.tx.Bucket(bucketMeta).Put([]byte(desiredPrefix+source), b[:])
}

// DesiredGenerations returns every source's last accepted generation.
func (t *Tx) DesiredGenerations() (map[string]uint64, error) {
	out := map[string]uint64{}
	c := t.tx.Bucket(bucketMeta).Cursor()
	p := []byte(desiredPrefix)
	for k, v := c.Seek(p); k != nil && strings.HasPrefix(string(k), desiredPrefix); k, v = c.Next() {
		if len(v) != 8 {
			return nil, fmt.Errorf("catalog: meta/%s: %d bytes, want 8", k, len(v))
		}
		out[string(k[len(p):])] = binary.BigEndian.Uint64(v)
	}
	return out, nil
}

// keyKeyList is the meta key of the signed key list the node holds (the
// message bytes exactly as received, verified again when read).
var keyKeyList = []byte("keylist")

// SetKeyList stores the signed key list b, replacing the one held.
func (t *Tx) SetKeyList(b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("catalog: empty key list: %w", models.ErrInvalidArgument)
	}
	return t.tx.Bucket(bucketMeta).Put(keyKeyList, b)
}

// KeyList returns the signed key list held, nil if none.
func (t *Tx) KeyList() []byte {
	return append([]byte(nil), t.tx.Bucket(bucketMeta).Get(keyKeyList)...)
}
