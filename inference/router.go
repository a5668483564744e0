package inference

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
)

// Version states in Router.Index.
const (
	StateServing  = "serving"  // routable
	StateDraining = "draining" // removed: waiting for in-flight requests, then closed
)

// Router maps (model, version) to the Model serving it. Each Acquire gets
// exactly one version and holds it until release, so a version can be
// swapped (Add the new one, SetDefault, Remove the old one) while requests
// run: requests that acquired the old version finish on it, later ones get
// the new one. All methods are safe for concurrent use.
type Router struct {
	// mu guards models and draining. Acquire takes it shared; every
	// change takes it exclusively, which is what makes Acquire atomic
	// with respect to Remove and SetDefault.
	mu       sync.RWMutex
	models   map[string]*routedModel
	draining map[*routedVersion]struct{}
}

type routedModel struct {
	versions map[string]*routedVersion
	def      string // default version; "" = none
}

type routedVersion struct {
	m Model
	// inflight counts acquired, not yet released uses. Add happens only
	// under Router.mu (shared) on a routable version; Wait only after the
	// version was made unroutable under Router.mu (exclusive), so no Add
	// can race the Wait.
	inflight sync.WaitGroup
}

// NewRouter returns an empty Router.
func NewRouter() *Router {
	return &Router{models: make(map[string]*routedModel), draining: make(map[*routedVersion]struct{})}
}

// Add makes m routable under (m.Name(), m.Version()). The first version of
// a model becomes its default; makeDefault makes m the default in any case.
// Adding a version that is already routed is an error wrapping
// ErrInvalidArgument.
func (r *Router) Add(m Model, makeDefault bool) error {
	name, version := m.Name(), m.Version()
	if name == "" || version == "" {
		return fmt.Errorf("router: model %q version %q: name and version must be set: %w", name, version, ErrInvalidArgument)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rm := r.models[name]
	if rm == nil {
		rm = &routedModel{versions: make(map[string]*routedVersion)}
		r.models[name] = rm
	}
	if _, ok := rm.versions[version]; ok {
		return fmt.Errorf("router: %s/%s is already routed: %w", name, version, ErrInvalidArgument)
	}
	rm.versions[version] = &routedVersion{m: m}
	if makeDefault || rm.def == "" {
		rm.def = version
	}
	return nil
}

// Acquire returns the Model for (model, version), version "" meaning the
// model's default, and a release function that must be called exactly once
// when the request is done with it (further calls do nothing). Unknown
// models and versions are errors wrapping ErrNotFound.
func (r *Router) Acquire(model, version string) (Model, func(), error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rm := r.models[model]
	if rm == nil {
		return nil, nil, fmt.Errorf("model %q: %w", model, ErrNotFound)
	}
	if version == "" {
		if rm.def == "" {
			return nil, nil, fmt.Errorf("model %q has no default version: %w", model, ErrNotFound)
		}
		version = rm.def
	}
	rv := rm.versions[version]
	if rv == nil {
		return nil, nil, fmt.Errorf("model %q version %q: %w", model, version, ErrNotFound)
	}
	rv.inflight.Add(1)
	var once sync.Once
	return rv.m, func() { once.Do(rv.inflight.Done) }, nil
}

// SetDefault makes version the default of model.
func (r *Router) SetDefault(model, version string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	rm := r.models[model]
	if rm == nil {
		return fmt.Errorf("model %q: %w", model, ErrNotFound)
	}
	if _, ok := rm.versions[version]; !ok {
		return fmt.Errorf("model %q version %q: %w", model, version, ErrNotFound)
	}
	rm.def = version
	return nil
}

// Remove stops routing new requests to (model, version), waits until every
// request that acquired it has released it, then closes it if it is an
// io.Closer, returning Close's error. If it was the default, the model has
// no default until SetDefault (or Add with makeDefault): a hot swap sets
// the new default before removing the old version.
func (r *Router) Remove(model, version string) error {
	r.mu.Lock()
	rm := r.models[model]
	var rv *routedVersion
	if rm != nil {
		rv = rm.versions[version]
	}
	if rv == nil {
		r.mu.Unlock()
		return fmt.Errorf("model %q version %q: %w", model, version, ErrNotFound)
	}
	delete(rm.versions, version)
	if rm.def == version {
		rm.def = ""
	}
	if len(rm.versions) == 0 {
		delete(r.models, model)
	}
	r.draining[rv] = struct{}{}
	r.mu.Unlock()

	rv.inflight.Wait()
	var err error
	if c, ok := rv.m.(io.Closer); ok {
		err = c.Close()
	}
	r.mu.Lock()
	delete(r.draining, rv)
	r.mu.Unlock()
	return err
}

// Close removes every version (see Remove) and returns the errors joined.
func (r *Router) Close() error {
	var errs []error
	for _, e := range r.Index() {
		if e.State == StateServing {
			if err := r.Remove(e.Model, e.Version); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// IndexEntry is one version in Router.Index.
type IndexEntry struct {
	Model    string
	Version  string
	Default  bool
	State    string // StateServing or StateDraining
	Provider string
}

// Index lists the routed and draining versions, sorted by model then
// version.
func (r *Router) Index() []IndexEntry {
	r.mu.RLock()
	var out []IndexEntry
	for name, rm := range r.models {
		for v, rv := range rm.versions {
			out = append(out, IndexEntry{Model: name, Version: v, Default: v == rm.def, State: StateServing, Provider: rv.m.Provider()})
		}
	}
	for rv := range r.draining {
		out = append(out, IndexEntry{Model: rv.m.Name(), Version: rv.m.Version(), State: StateDraining, Provider: rv.m.Provider()})
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Model != out[j].Model {
			return out[i].Model < out[j].Model
		}
		if out[i].Version != out[j].Version {
			return out[i].Version < out[j].Version
		}
		return out[i].State > out[j].State // serving before draining
	})
	return out
}
