package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/node/serving"
	"github.com/edgeai/edge-node/sync/transfer"
	"github.com/edgeai/edge-node/sync/wire"
)

// worker brings one model to its desired version. Each desired model has
// its own, so a stuck or failing model never delays another.
type worker struct {
	r      *Reconciler
	model  string
	cancel context.CancelFunc
	kick   chan struct{} // capacity 1: look again now

	mu sync.Mutex // guards t, retried and trusted
	t  target
	// retried is the seq of the desired state under which this worker made
	// its one attempt at a Failed version (or failed it itself): a Failed
	// version is tried again once per accepted desired state.
	retried uint64
	// trusted is the trust epoch (Reconciler.TrustChanged) of that attempt:
	// a version Failed(SignatureInvalid) is also tried again once per
	// change of the keys the node trusts.
	trusted uint64
}

func (w *worker) target() target {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.t
}

// retarget hands the worker a newer desired state with the same spec (a
// newer generation): a Failed version gets its one retry under it, and a
// local override is weighed against the new generations.
func (w *worker) retarget(t target) {
	w.mu.Lock()
	w.t = t
	w.mu.Unlock()
	w.wake()
}

func (w *worker) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// progressEvery is how often a transfer's progress reaches status.
const progressEvery = 500 * time.Millisecond

// transferBudget counts a version's transfer attempts in a row that
// brought no new bytes.
type transferBudget struct {
	stalls     int
	best       int64 // the most bytes any attempt had stored
	progressed bool  // this attempt stored new bytes
}

// result is what one step found.
type result struct {
	nt note
	// wait: try again after a backoff (or a kick); otherwise the step
	// reached a state that only a change (the owner's, a new desired
	// state, a kick) can move.
	wait bool
}

// run steps until ctx ends: after a waiting step, again after a backoff
// (doubling up to RetryMax) or a kick; after any other, when the owner
// changed something or on a kick.
func (w *worker) run(ctx context.Context) {
	r := w.r
	owner := r.cfg.Owner.Subscribe(ctx)
	backoff := r.cfg.RetryMin
	var budget transferBudget
	for {
		res := w.step(ctx, &budget)
		if ctx.Err() != nil {
			return
		}
		r.setNote(w, res.nt)
		r.m.applies.WithLabelValues(resultLabel(res)).Inc()
		var retry *time.Timer
		var retryC <-chan time.Time
		if res.wait {
			retry = time.NewTimer(backoff)
			retryC = retry.C
			backoff = min(2*backoff, r.cfg.RetryMax)
		} else {
			backoff = r.cfg.RetryMin
		}
		if !w.sleep(ctx, retryC, owner, res.wait) {
			return
		}
		if retry != nil {
			retry.Stop()
		}
	}
}

// sleep waits for the next step: a kick, the retry timer, or (unless the
// model is waiting for its timer) a change by the owner. It returns false
// when the worker must stop.
func (w *worker) sleep(ctx context.Context, retry <-chan time.Time, owner <-chan struct{}, waiting bool) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-w.kick:
			return true
		case <-retry:
			return true
		case _, ok := <-owner:
			if !ok {
				return false
			}
			if !waiting {
				return true
			}
		}
	}
}

func resultLabel(res result) string {
	switch {
	case res.wait:
		return "waiting"
	case res.nt.state == models.Active:
		return "active"
	case res.nt.state == models.Failed:
		return "failed"
	}
	return "held"
}

// step moves the model as far towards its desired version as it can now.
func (w *worker) step(ctx context.Context, stalls *transferBudget) result {
	r := w.r
	t := w.target()
	ver := t.spec.Version
	log := r.log.With().Str("model", w.model).Str("version", ver).Logger()
	base := note{version: ver, rollout: t.spec.Rollout}
	at := func(state models.State, reason models.Reason, wait bool) result {
		nt := base
		nt.state, nt.reason = state, reason
		return result{nt: nt, wait: wait}
	}
	st := r.cfg.Store
	v, err := st.Version(ctx, w.model, ver)
	if errors.Is(err, models.ErrNotFound) {
		var res *result
		if v, res = w.announce(ctx, t, at, log); res != nil {
			return *res
		}
	} else if err != nil {
		log.Error().Err(err).Msg("reading the store")
		return at(models.Waiting, models.ReasonStoreError, true)
	}
	for range 12 {
		if ctx.Err() != nil {
			return at(v.State, "", true)
		}
		switch v.State {
		case models.Announced:
			v, err = st.Transition(ctx, w.model, ver, models.Downloading, models.TransitionOptions{})
		case models.Downloading:
			var res *result
			if v, res, err = w.download(ctx, v, base, stalls, log); res != nil {
				return *res
			}
		case models.Verifying:
			v, err = st.VerifyVersion(ctx, w.model, ver)
			if err != nil && errors.Is(err, models.ErrNotFound) {
				// A blob went missing between download and verify: fetch again.
				v, err = st.Version(ctx, w.model, ver)
			}
		case models.Failed:
			if !w.takeRetry(t.seq) && (v.Reason != models.ReasonSignatureInvalid || !w.takeTrustRetry()) {
				return at(models.Failed, v.Reason, false)
			}
			// Once per accepted desired state, a failed version is tried
			// again: a manifest re-signed with a trusted key, chunks
			// republished, or a transient load error.
			if v.Reason == models.ReasonSignatureInvalid || v.Reason == models.ReasonInvalidManifest {
				var res *result
				if v, res = w.announce(ctx, t, at, log); res != nil {
					return *res
				}
				continue
			}
			*stalls = transferBudget{}
			v, err = st.Retry(ctx, w.model, ver)
		default: // Ready, Retired, Loading, Warming, Canary, Shadow, Active: the owner's
			return w.apply(ctx, t, at, log)
		}
		if err != nil {
			if ctx.Err() != nil {
				return at(v.State, "", true)
			}
			if cur, verr := st.Version(ctx, w.model, ver); verr == nil && cur.State == models.Failed {
				w.markTried(t.seq)
				log.Warn().Err(err).Str("reason", string(cur.Reason)).Msg("desired version failed; the previous version keeps serving")
				return at(models.Failed, cur.Reason, false)
			}
			log.Error().Err(err).Msg("reconcile step")
			return at(v.State, models.ReasonStoreError, true)
		}
	}
	return at(v.State, "", true)
}

// takeRetry reports whether the Failed version may be tried again under
// the desired state seq (once), and records that it was.
func (w *worker) takeRetry(seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.retried == seq {
		return false
	}
	w.retried = seq
	w.trusted = w.r.trust.Load()
	return true
}

// takeTrustRetry reports whether a version Failed(SignatureInvalid) may be
// tried again because the trusted keys changed since the last attempt
// (once per change), and records that it was.
func (w *worker) takeTrustRetry() bool {
	epoch := w.r.trust.Load()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.trusted >= epoch {
		return false
	}
	w.trusted = epoch
	return true
}

// markTried records that the version failed under the desired state seq:
// it is not tried again until a newer one.
func (w *worker) markTried(seq uint64) {
	epoch := w.r.trust.Load()
	w.mu.Lock()
	w.retried = seq
	w.trusted = epoch
	w.mu.Unlock()
}

// apply hands a stored version to the serving owner.
func (w *worker) apply(ctx context.Context, t target, at func(models.State, models.Reason, bool) result, log zerolog.Logger) result {
	r := w.r
	d := serving.Desired{Model: w.model, Version: t.spec.Version, Generations: t.gens}
	if s := t.spec.Strategy; s != nil {
		cp := *s
		d.Strategy = &cp
	}
	oc, err := r.cfg.Owner.Apply(ctx, d)
	if err != nil {
		if ctx.Err() != nil {
			return at(oc.State, "", true)
		}
		if v, verr := r.cfg.Store.Version(ctx, w.model, t.spec.Version); verr == nil && v.State == models.Failed {
			w.markTried(t.seq) // Failed(LoadError, WarmupFailed): the previous version serves
			log.Warn().Err(err).Str("reason", string(v.Reason)).Msg("desired version failed; the previous version keeps serving")
			return at(models.Failed, v.Reason, false)
		}
		log.Error().Err(err).Msg("activation")
		return at(models.Waiting, models.ReasonStoreError, true)
	}
	switch {
	case oc.Wait():
		// Gate failures are decisions, not transient errors: a version the
		// rollout fails is not tried again for the same desired state.
		w.markTried(t.seq)
		return at(oc.State, oc.Reason, false)
	case oc.State == models.Active:
		return at(models.Active, "", false)
	case oc.State == models.Failed:
		return at(models.Failed, oc.Reason, false)
	}
	return at(oc.State, oc.Reason, false) // Held, Overridden
}

// announce reads the retained signed manifest of the desired version and
// records it in the store. res is non-nil when the step ends here. A
// manifest that fails the link's checks is counted and logged
// (rate-limited) and never reaches the store, except a bad or untrusted
// signature, which the store records as Failed(SignatureInvalid) for a
// version it does not have (never touching an existing one).
func (w *worker) announce(ctx context.Context, t target, at func(models.State, models.Reason, bool) result, log zerolog.Logger) (models.VersionInfo, *result) {
	r := w.r
	ver := t.spec.Version
	end := func(res result) (models.VersionInfo, *result) { return models.VersionInfo{}, &res }
	f := r.cfg.Fetcher
	if f == nil {
		return end(at(models.Waiting, models.ReasonNoCloudLink, false))
	}
	if !f.Connected() {
		return end(at(models.Waiting, models.ReasonBrokerUnreachable, true))
	}
	b, ok := f.ReadManifest(ctx, w.model, ver)
	if !ok {
		if !f.Connected() {
			return end(at(models.Waiting, models.ReasonBrokerUnreachable, true))
		}
		return end(at(models.Waiting, models.ReasonManifestNotPublished, true))
	}
	if derr := f.CheckManifest(b, w.model, ver); derr != nil {
		w.markTried(t.seq)
		_, reason := wire.ReasonOf(derr)
		if reason == wire.ReasonBadSignature || reason == wire.ReasonUnknownKey {
			v, aerr := r.cfg.Store.Announce(ctx, b)
			if aerr != nil && !errors.Is(aerr, models.ErrSignatureInvalid) {
				log.Warn().Err(aerr).Msg("recording the bad signature")
			}
			res := at(models.Failed, models.ReasonSignatureInvalid, false)
			return v, &res
		}
		return end(at(models.Failed, models.ReasonInvalidManifest, false))
	}
	v, err := r.cfg.Store.Announce(ctx, b)
	if err != nil {
		w.markTried(t.seq)
		log.Error().Err(err).Msg("store refused the manifest")
		return end(at(models.Failed, models.ReasonInvalidManifest, false))
	}
	return v, nil
}

// download fetches v's chunks into the store and verifies the version. res
// is non-nil when the step ends here: the link is down, or the attempt
// stopped before the end (what was written and verified stays in the
// store). The fetcher ends an attempt that gets no wanted chunk for its
// stall timeout while connected (transfer.ErrStalled); MaxTransferAttempts
// attempts in a row that stored no new bytes fail the version
// (TransferStalled). A manifest no publisher can satisfy fails it at once
// (InvalidManifest), a file that does not hash to its sha256 likewise
// (ChecksumMismatch).
func (w *worker) download(ctx context.Context, v models.VersionInfo, base note, stalls *transferBudget, log zerolog.Logger) (models.VersionInfo, *result, error) {
	r := w.r
	f := r.cfg.Fetcher
	wait := func(reason models.Reason, done, total int64) *result {
		nt := base
		nt.state, nt.reason, nt.done, nt.total = models.Downloading, reason, done, total
		return &result{nt: nt, wait: true}
	}
	if f == nil {
		nt := base
		nt.state, nt.reason = models.Downloading, models.ReasonNoCloudLink
		return v, &result{nt: nt}, nil
	}
	if !f.Connected() {
		return v, wait(models.ReasonBrokerUnreachable, 0, 0), nil
	}
	var mu sync.Mutex // guards done, total, noted, flush and stalls against the fetcher's callbacks
	var done, total int64
	var noted time.Time
	var flush *time.Timer // a pending note of the latest progress
	var ended bool        // Fetch returned: no more progress notes
	var outside bool      // the Fetch waits for cloud.fetch_window
	note := func() {      // mu held
		noted = time.Now()
		nt := base
		nt.state, nt.done, nt.total = models.Downloading, done, total
		if outside {
			nt.reason = models.ReasonOutsideFetchWindow
		}
		r.setNote(w, nt)
	}
	progress := func(p transfer.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if p.BytesDone > stalls.best { // new bytes, not the ones stored by earlier attempts
			stalls.best, stalls.progressed = p.BytesDone, true
		}
		done, total = p.BytesDone, p.BytesTotal
		windowChanged := p.OutsideWindow != outside
		outside = p.OutsideWindow
		r.m.bytesDone.WithLabelValues(w.model).Set(float64(p.BytesDone))
		r.m.bytesTotal.WithLabelValues(w.model).Set(float64(p.BytesTotal))
		// Status (a retained publish, and a read of the store) follows
		// progress at most every progressEvery, the latest figure always
		// last: a large model has thousands of chunks.
		if wait := progressEvery - time.Since(noted); wait > 0 && p.BytesDone < p.BytesTotal && !windowChanged {
			if flush == nil {
				flush = time.AfterFunc(wait, func() {
					mu.Lock()
					defer mu.Unlock()
					flush = nil
					if !ended {
						note()
					}
				})
			}
			return
		}
		note()
	}
	res, err := f.Fetch(ctx, v.Manifest, progress)
	mu.Lock()
	defer mu.Unlock()
	ended = true // the step's own result carries the last figures
	if flush != nil {
		flush.Stop()
	}
	if err != nil {
		if ctx.Err() != nil {
			return v, wait("", done, total), nil
		}
		if errors.Is(err, transfer.ErrUnsatisfiable) {
			// No publisher can complete this manifest: fail now, with its reason.
			fv, ferr := r.cfg.Store.Fail(context.WithoutCancel(ctx), v.Model, v.Version, models.ReasonInvalidManifest, err.Error())
			return fv, nil, errors.Join(err, ferr)
		}
		if errors.Is(err, transfer.ErrChecksumMismatch) {
			fv, ferr := r.cfg.Store.Fail(context.WithoutCancel(ctx), v.Model, v.Version, models.ReasonChecksumMismatch, err.Error())
			return fv, nil, errors.Join(err, ferr)
		}
		if stalls.progressed {
			stalls.stalls = 0
		} else {
			stalls.stalls++
		}
		stalls.progressed = false
		if stalls.stalls >= r.cfg.MaxTransferAttempts {
			detail := fmt.Sprintf("%d transfer attempts in a row made no progress (last: %v)", stalls.stalls, err)
			fv, ferr := r.cfg.Store.Fail(context.WithoutCancel(ctx), v.Model, v.Version, models.ReasonTransferStalled, detail)
			return fv, nil, errors.Join(errors.New(detail), ferr)
		}
		log.Warn().Err(err).Int("attempts_without_progress", stalls.stalls).Int("of", r.cfg.MaxTransferAttempts).Msg("transfer interrupted; it resumes from the store")
		return v, wait(models.ReasonTransferInterrupted, done, total), nil
	}
	*stalls = transferBudget{}
	log.Info().Int64("bytes_network", res.BytesNetwork).Int64("bytes_local", res.BytesLocal).Int64("bytes_resumed", res.BytesResumed).
		Int64("bytes_total", res.BytesTotal).Int("chunks_network", res.ChunksNetwork).Int("chunks_resumed", res.ChunksResumed).Msg("version downloaded")
	ts := models.TransferStats{BytesTotal: res.BytesTotal, BytesNetwork: res.BytesNetwork, BytesLocal: res.BytesLocal, BytesResumed: res.BytesResumed,
		ChunksNetwork: res.ChunksNetwork, ChunksLocal: res.ChunksLocal, ChunksResumed: res.ChunksResumed,
		UniqueMissing: res.UniqueMissing, Duplicates: res.Duplicates, Resubscribes: res.Resubscribes}
	if err := r.cfg.Store.RecordTransfer(ctx, v.Model, v.Version, ts); err != nil {
		log.Warn().Err(err).Msg("recording the transfer's figures")
	}
	nv, err := r.cfg.Store.VerifyVersion(ctx, v.Model, v.Version)
	return nv, nil, err
}
