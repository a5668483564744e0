package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/edgeai/edge-node/errdefs"
)

// Bucket layout of the state file:
//
//	rollouts/<id> → Record JSON
//	leases/<id>   → Lease JSON
var (
	bucketRollouts = []byte("rollouts")
	bucketLeases   = []byte("leases")
)

// Lease says which controller drives a rollout, until when.
type Lease struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
}

// Store is the controller's state file. It opens the bbolt file for each
// operation and closes it after, so `edgectl rollout status|pause|…` and
// `serve` can read and write it while a controller runs (bbolt's file lock
// is exclusive; Options.Timeout bounds the wait for it instead of blocking
// for ever).
type Store struct {
	path    string
	timeout time.Duration
}

// NewStore returns the store at path (created on first write).
func NewStore(path string) *Store { return &Store{path: path, timeout: 10 * time.Second} }

// errNoFile is a read of a state file that does not exist: nothing is
// stored (a read never creates the file).
var errNoFile = errors.New("rollout: no state file")

func (s *Store) do(write bool, fn func(tx *bolt.Tx) error) error {
	if !write {
		if _, err := os.Stat(s.path); errors.Is(err, fs.ErrNotExist) {
			return errNoFile
		}
	}
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{Timeout: s.timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("rollout: open %s: no lock after %s (another edgectl holds it): %w", s.path, s.timeout, errdefs.ErrLocked)
	}
	if err != nil {
		return fmt.Errorf("rollout: open %s: %w", s.path, err)
	}
	defer db.Close()
	if write {
		return db.Update(func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bucketRollouts, bucketLeases} {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return fn(tx)
		})
	}
	return db.View(fn)
}

func getJSON(tx *bolt.Tx, bucket []byte, id string, v any) (bool, error) {
	b := tx.Bucket(bucket)
	if b == nil {
		return false, nil
	}
	raw := b.Get([]byte(id))
	if raw == nil {
		return false, nil
	}
	return true, json.Unmarshal(raw, v)
}

func putJSON(tx *bolt.Tx, bucket []byte, id string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(id), raw)
}

// Create stores a new record; ErrExists if the id is taken.
func (s *Store) Create(r *Record) error {
	return s.do(true, func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRollouts).Get([]byte(r.Spec.ID)) != nil {
			return fmt.Errorf("rollout %s: %w", r.Spec.ID, ErrExists)
		}
		return putJSON(tx, bucketRollouts, r.Spec.ID, r)
	})
}

// Get returns a record; ErrNotFound if there is none.
func (s *Store) Get(id string) (*Record, error) {
	var r Record
	err := s.do(false, func(tx *bolt.Tx) error {
		ok, err := getJSON(tx, bucketRollouts, id, &r)
		if err == nil && !ok {
			err = fmt.Errorf("rollout %s: %w", id, ErrNotFound)
		}
		return err
	})
	if errors.Is(err, errNoFile) {
		return nil, fmt.Errorf("rollout %s: no state file %s: %w", id, s.path, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// List returns every record, newest first.
func (s *Store) List() ([]*Record, error) {
	var out []*Record
	err := s.do(false, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRollouts)
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, &r)
			return nil
		})
	})
	if errors.Is(err, errNoFile) {
		return nil, nil
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, err
}

// Update applies fn to the record in one transaction. Without a state
// file there is no record, and none is created.
func (s *Store) Update(id string, fn func(r *Record) error) (*Record, error) {
	if _, err := os.Stat(s.path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("rollout %s: no state file %s: %w", id, s.path, ErrNotFound)
	}
	var r Record
	err := s.do(true, func(tx *bolt.Tx) error {
		ok, err := getJSON(tx, bucketRollouts, id, &r)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("rollout %s: %w", id, ErrNotFound)
		}
		if err := fn(&r); err != nil {
			return err
		}
		return putJSON(tx, bucketRollouts, id, &r)
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// Command records an operator command for the controller, after checking
// it makes sense in the rollout's phase.
func (s *Store) Command(id, cmd string) (*Record, error) {
	return s.Update(id, func(r *Record) error { return setCommand(r, cmd) })
}

// Command records an operator command in recs for the controller driving
// rollout id (Store.Command on any Records).
func Command(ctx context.Context, recs Records, id, cmd string) (*Record, error) {
	return recs.Update(ctx, id, func(r *Record) error { return setCommand(r, cmd) })
}

func setCommand(r *Record, cmd string) error {
	ok := false
	switch cmd {
	case CmdPause:
		ok = r.Phase == PhaseRunning || r.Phase == PhaseWatching
	case CmdResume:
		ok = r.Phase == PhasePaused
	case CmdAbort:
		ok = r.Phase == PhaseRunning || r.Phase == PhasePaused || r.Phase == PhaseWatching
	case CmdRollback:
		ok = !r.Phase.Final() || r.Phase == PhaseHeld || r.Phase == PhaseCompleted
	default:
		return fmt.Errorf("rollout: unknown command %q (want pause, resume, abort or rollback): %w", cmd, errdefs.ErrInvalidArgument)
	}
	if !ok {
		return fmt.Errorf("rollout %s is %s: cannot %s: %w", r.Spec.ID, r.Phase, cmd, ErrBadState)
	}
	r.Command = cmd
	return nil
}

// AcquireLease takes or renews the lease of rollout id for owner until
// now+ttl. It fails with ErrLeaseHeld while another owner's lease has not
// expired.
func (s *Store) AcquireLease(id, owner string, ttl time.Duration, now time.Time) error {
	return s.do(true, func(tx *bolt.Tx) error {
		var l Lease
		ok, err := getJSON(tx, bucketLeases, id, &l)
		if err != nil {
			return err
		}
		if ok && l.Owner != owner && now.Before(l.Expires) {
			return fmt.Errorf("rollout %s is driven by controller %q until %s (if that controller is dead: edgectl rollout run %s --take-over): %w",
				id, l.Owner, l.Expires.UTC().Format(time.RFC3339), id, ErrLeaseHeld)
		}
		return putJSON(tx, bucketLeases, id, Lease{Owner: owner, Expires: now.Add(ttl)})
	})
}

// TakeLease gives the lease of rollout id to owner until now+ttl whoever
// holds it (an operator's explicit take-over of a controller they know is
// dead), and returns the lease it replaced (ok false when there was none).
func (s *Store) TakeLease(id, owner string, ttl time.Duration, now time.Time) (prev Lease, ok bool, err error) {
	err = s.do(true, func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRollouts).Get([]byte(id)) == nil {
			return fmt.Errorf("rollout %s: %w", id, ErrNotFound)
		}
		var err error
		if ok, err = getJSON(tx, bucketLeases, id, &prev); err != nil {
			return err
		}
		return putJSON(tx, bucketLeases, id, Lease{Owner: owner, Expires: now.Add(ttl)})
	})
	return prev, ok, err
}

// ReleaseLease drops owner's lease (another owner's is left alone).
func (s *Store) ReleaseLease(id, owner string) error {
	return s.do(true, func(tx *bolt.Tx) error {
		var l Lease
		ok, err := getJSON(tx, bucketLeases, id, &l)
		if err != nil || !ok || l.Owner != owner {
			return err
		}
		return tx.Bucket(bucketLeases).Delete([]byte(id))
	})
}

// LeaseOf returns the current lease of id, if any.
func (s *Store) LeaseOf(id string) (Lease, bool, error) {
	var l Lease
	var ok bool
	err := s.do(false, func(tx *bolt.Tx) error {
		var err error
		ok, err = getJSON(tx, bucketLeases, id, &l)
		return err
	})
	if errors.Is(err, errNoFile) {
		err = nil
	}
	return l, ok, err
}

// fileRecords is the Store as a controller's Records. A bbolt transaction
// is not cancellable; the file lock's wait is bounded by the Store's
// timeout.
type fileRecords struct{ *Store }

func (f fileRecords) Create(_ context.Context, r *Record) error { return f.Store.Create(r) }

func (f fileRecords) Get(_ context.Context, id string) (*Record, error) { return f.Store.Get(id) }

func (f fileRecords) List(context.Context) ([]*Record, error) { return f.Store.List() }

func (f fileRecords) Update(_ context.Context, id string, fn func(*Record) error) (*Record, error) {
	return f.Store.Update(id, fn)
}

func (f fileRecords) AcquireLease(_ context.Context, id, owner string, ttl time.Duration, now time.Time) error {
	return f.Store.AcquireLease(id, owner, ttl, now)
}

func (f fileRecords) ReleaseLease(_ context.Context, id, owner string) error {
	return f.Store.ReleaseLease(id, owner)
}

// Leases returns every rollout's lease, by rollout id.
func (s *Store) Leases() (map[string]Lease, error) {
	out := map[string]Lease{}
	err := s.do(false, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLeases)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var l Lease
			if err := json.Unmarshal(v, &l); err != nil {
				return err
			}
			out[string(k)] = l
			return nil
		})
	})
	if errors.Is(err, errNoFile) {
		err = nil
	}
	return out, err
}
