// Package outbox is the node's durable, bounded queue of reports (status and
// events) waiting for the broker: a bbolt bucket keyed by a big-endian
// sequence number, so messages flush in the order they were appended, survive
// a restart, and the oldest is dropped first when the queue is full.
//
// Bucket layout (bucket name configurable, default "outbox"):
//
//	key:   8-byte big-endian sequence number (bucket's NextSequence)
//	value: 1 byte flags (bit 0: retained) | 2 bytes big-endian topic length | topic | payload
//
// The model store may pass its own *bbolt.DB to New so the outbox lives in the
// store's file; Open opens a file of its own.
package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/bbolt"
)

// Message is one queued report.
type Message struct {
	Seq      uint64
	Topic    string
	Retained bool
	Payload  []byte
}

// Bolt is a bbolt-backed outbox. It is safe for concurrent use (bbolt
// serialises writers).
type Bolt struct {
	db     *bbolt.DB
	owned  bool // Close closes db
	bucket []byte
	limit  int

	mu sync.Mutex // guards n; held across each write transaction
	n  int        // messages in the bucket (bbolt's Stats lag inside a write tx)
}

// DefaultLimit is the default number of messages kept.
const DefaultLimit = 10000

// Open opens (creating) a bbolt file at path holding an outbox of at most
// limit messages (0: DefaultLimit).
func Open(path string, limit int) (*Bolt, error) {
	// Timeout: without it a second process holding the file blocks us for ever on flock.
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("outbox: open %s: %w", path, err)
	}
	b, err := New(db, "", limit)
	if err != nil {
		db.Close()
		return nil, err
	}
	b.owned = true
	return b, nil
}

// New uses bucket (empty: "outbox") of an open db.
func New(db *bbolt.DB, bucket string, limit int) (*Bolt, error) {
	if bucket == "" {
		bucket = "outbox"
	}
	if limit <= 0 {
		limit = DefaultLimit
	}
	b := &Bolt{db: db, bucket: []byte(bucket), limit: limit}
	err := db.Update(func(tx *bbolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(b.bucket)
		if err != nil {
			return err
		}
		b.n = bk.Stats().KeyN
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	return b, nil
}

// Close closes the file if Open opened it. It is idempotent.
func (b *Bolt) Close() error {
	if !b.owned {
		return nil
	}
	err := b.db.Close()
	if errors.Is(err, bbolt.ErrDatabaseNotOpen) {
		return nil
	}
	return err
}

// Append queues a message, durably, and returns how many of the oldest
// messages were dropped to stay within the limit.
func (b *Bolt) Append(topic string, retained bool, payload []byte) (dropped int, err error) {
	if len(topic) == 0 || len(topic) > 0xffff {
		return 0, fmt.Errorf("outbox: bad topic length %d", len(topic))
	}
	v := make([]byte, 3+len(topic)+len(payload))
	if retained {
		v[0] = 1
	}
	binary.BigEndian.PutUint16(v[1:3], uint16(len(topic)))
	copy(v[3:], topic)
	copy(v[3+len(topic):], payload)
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.n
	err = b.db.Update(func(tx *bbolt.Tx) error {
		n, dropped = b.n, 0
		bk := tx.Bucket(b.bucket)
		seq, err := bk.NextSequence()
		if err != nil {
			return err
		}
		if err := bk.Put(seqKey(seq), v); err != nil {
			return err
		}
		n++
		c := bk.Cursor()
		for ; n > b.limit; n-- {
			k, _ := c.First()
			if k == nil {
				break
			}
			if err := c.Delete(); err != nil {
				return err
			}
			dropped++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("outbox: append: %w", err)
	}
	b.n = n
	return dropped, nil
}

// Oldest returns up to n messages, oldest first.
func (b *Bolt) Oldest(n int) ([]Message, error) {
	var out []Message
	err := b.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(b.bucket).Cursor()
		for k, v := c.First(); k != nil && len(out) < n; k, v = c.Next() {
			m, err := decode(k, v)
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	return out, nil
}

// Remove deletes a message once the broker has acknowledged it. Removing a
// missing sequence is not an error.
func (b *Bolt) Remove(seq uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	removed := false
	err := b.db.Update(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(b.bucket)
		removed = bk.Get(seqKey(seq)) != nil
		return bk.Delete(seqKey(seq))
	})
	if err == nil && removed {
		b.n--
	}
	return err
}

// Len returns the number of queued messages.
func (b *Bolt) Len() (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n, nil
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

func decode(k, v []byte) (Message, error) {
	if len(k) != 8 || len(v) < 3 {
		return Message{}, fmt.Errorf("corrupt outbox entry %x", k)
	}
	tl := int(binary.BigEndian.Uint16(v[1:3]))
	if len(v) < 3+tl {
		return Message{}, fmt.Errorf("corrupt outbox entry %x", k)
	}
	return Message{
		Seq:      binary.BigEndian.Uint64(k),
		Retained: v[0]&1 != 0,
		Topic:    string(v[3 : 3+tl]),
		Payload:  append([]byte(nil), v[3+tl:]...),
	}, nil
}
