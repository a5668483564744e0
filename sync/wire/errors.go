package wire

import (
	"errors"
	"fmt"

	"github.com/edgeai/edge-node/models"
)

// ErrRejected is wrapped by every *RejectError, so callers can test for any
// rejected message with errors.Is(err, wire.ErrRejected).
var ErrRejected = errors.New("message rejected")

// Kinds of message, used as the "kind" label of rejection metrics.
const (
	KindDesired  = "desired"
	KindManifest = "manifest"
	KindChunk    = "chunk"
	KindStatus   = "status"
	KindPresence = "presence"
	KindEvent    = "event"
	KindKeys     = "keys"
	KindTopic    = "topic"
)

// Reasons a message is rejected, used as the "reason" label of rejection
// metrics. docs/protocol.md lists them.
const (
	ReasonOversize         = "oversize"
	ReasonBadJSON          = "bad_json"
	ReasonBadField         = "bad_field"
	ReasonUnknownProtocol  = "unknown_protocol"
	ReasonBadSignature     = "bad_signature"
	ReasonUnknownKey       = "unknown_key"
	ReasonTooLarge         = "too_large"
	ReasonStaleGeneration  = "stale_generation"
	ReasonBadTopic         = "bad_topic"
	ReasonUnsolicitedChunk = "unsolicited_chunk"
	ReasonChunkMismatch    = "chunk_mismatch"
	// ReasonChunkSize: a chunk whose bytes hash to its name has another
	// size than the manifest says (the manifest is wrong).
	ReasonChunkSize = "chunk_size"
	// ReasonUnsigned: an unsigned desired state on a node that requires
	// signed ones.
	ReasonUnsigned = "unsigned"
	// ReasonWrongTarget: a desired state that names another node or group
	// than the topic it came on (a replay onto another topic).
	ReasonWrongTarget = "wrong_target"
	// ReasonRevokedKey: signed by a key the key list revokes.
	ReasonRevokedKey = "revoked_key"
	// ReasonExpired: signed metadata past its expiry (a desired state's or
	// key list's "expires"), or signed by a key only an expired key list
	// trusts.
	ReasonExpired = "expired"
)

// keyReject turns a models.Keys lookup error into the rejection of a
// message of kind k: unknown_key, revoked_key or expired.
func keyReject(k string, err error) error {
	reason := ReasonUnknownKey
	switch {
	case errors.Is(err, models.ErrKeyRevoked):
		reason = ReasonRevokedKey
	case errors.Is(err, models.ErrKeyExpired):
		reason = ReasonExpired
	}
	return &RejectError{Kind: k, Reason: reason, Err: err}
}

// RejectError says why a message was rejected.
type RejectError struct {
	Kind   string // KindDesired, KindChunk, ...
	Reason string // ReasonOversize, ReasonBadJSON, ...
	Err    error  // detail
}

func (e *RejectError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("%s rejected: %s", e.Kind, e.Reason)
	}
	return fmt.Sprintf("%s rejected: %s: %v", e.Kind, e.Reason, e.Err)
}

// Unwrap returns ErrRejected and the detail error.
func (e *RejectError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrRejected}
	}
	return []error{ErrRejected, e.Err}
}

// Reject builds a *RejectError with a formatted detail.
func Reject(kind, reason, format string, args ...any) *RejectError {
	return &RejectError{Kind: kind, Reason: reason, Err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the kind and reason of a rejection, or ("", "") when err is
// not one.
func ReasonOf(err error) (kind, reason string) {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Kind, re.Reason
	}
	return "", ""
}
