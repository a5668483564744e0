package kubeedge

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/edgeai/edge-node/models"
)

// KubeEdge's limits on twin names and values (dtcommon's validation).
const (
	MaxNameLen  = 128
	MaxValueLen = 512
	// MaxModels bounds the models one Device may name; more is refused
	// (ReasonTooManyModels) rather than half-applied.
	MaxModels = 256
	// MaxProperties bounds the properties decoded from one update.
	MaxProperties = 8 * MaxModels
)

var (
	namePattern  = regexp.MustCompile(`^[a-zA-Z0-9\-_.,:/@#]{1,128}$`)
	valuePattern = regexp.MustCompile(`^[a-zA-Z0-9\-_.,:/@#]{1,512}$`)
)

// ValidName reports whether s is a legal KubeEdge twin name.
func ValidName(s string) bool { return namePattern.MatchString(s) }

// ValidValue reports whether s is a legal KubeEdge twin value.
func ValidValue(s string) bool { return valuePattern.MatchString(s) }

// None is the value reported for "nothing" (KubeEdge values cannot be empty).
const None = "none"

// Field is the part of a property name after the model name.
type Field string

// The fields of a model's properties (see the package doc).
const (
	FieldVersion   Field = "version"
	FieldRollout   Field = "rollout"
	FieldSHA256    Field = "sha256"
	FieldCanary    Field = "canary"
	FieldState     Field = "state"
	FieldReason    Field = "reason"
	FieldP99       Field = "p99_ms"
	FieldErrorRate Field = "error_rate"
)

// Fields lists every field in report order.
var Fields = []Field{FieldVersion, FieldRollout, FieldSHA256, FieldCanary, FieldState, FieldReason, FieldP99, FieldErrorRate}

// Writable reports whether the field takes desired values.
func (f Field) Writable() bool {
	return f == FieldVersion || f == FieldRollout || f == FieldSHA256
}

// Float reports whether the field is declared FLOAT in the DeviceModel
// (deploy/kubeedge/devicemodel.yaml): its values are numbers, "0" before
// anything was measured, never "none".
func (f Field) Float() bool { return f == FieldP99 || f == FieldErrorRate }

// ClearedValue is the value reported for a property the node no longer
// reports (its model left the Device): "0" for a FLOAT field, None for the
// others, so the cloud's DeviceStatus does not keep a stale value.
func ClearedValue(name string) string {
	if _, f, ok := SplitPropertyName(name); ok && f.Float() {
		return "0"
	}
	return None
}

func (f Field) valid() bool {
	for _, g := range Fields {
		if f == g {
			return true
		}
	}
	return false
}

// PropertyName returns "<model>.<field>".
func PropertyName(model string, f Field) string { return model + "." + string(f) }

// SplitPropertyName splits "<model>.<field>" at the last '.'.
func SplitPropertyName(name string) (model string, f Field, ok bool) {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || i == len(name)-1 {
		return "", "", false
	}
	return name[:i], Field(name[i+1:]), true
}

// Strategy kinds: the store's and the MQTT desired state's, one spelling.
const (
	StrategyImmediate = models.StrategyImmediate
	StrategyCanary    = models.StrategyCanary
	StrategyShadow    = models.StrategyShadow
)

// Strategy says how a new version takes traffic.
type Strategy struct {
	Kind          models.StrategyKind // StrategyImmediate, StrategyCanary or StrategyShadow
	CanaryPercent int                 // 1–99 for canary
	ShadowPercent int                 // 1–100 for shadow
}

// String is the twin value form: "immediate", "canary:P", "shadow:P".
func (s Strategy) String() string {
	switch s.Kind {
	case StrategyCanary:
		return string(StrategyCanary) + ":" + strconv.Itoa(s.CanaryPercent)
	case StrategyShadow:
		return string(StrategyShadow) + ":" + strconv.Itoa(s.ShadowPercent)
	}
	return string(StrategyImmediate)
}

// ParseStrategy decodes a rollout twin value.
func ParseStrategy(v string) (Strategy, error) {
	kind, arg, hasArg := strings.Cut(v, ":")
	pct := func(lo, hi int) (int, error) {
		if !hasArg {
			return 0, fmt.Errorf("%q needs a percentage (%s:%d-%d)", v, kind, lo, hi)
		}
		// Digits only: no sign, no spaces, no leading zeros beyond "0".
		if arg == "" || len(arg) > 3 || strings.Trim(arg, "0123456789") != "" || (len(arg) > 1 && arg[0] == '0') {
			return 0, fmt.Errorf("%q: percentage %q is not a number %d-%d", v, arg, lo, hi)
		}
		n, _ := strconv.Atoi(arg)
		if n < lo || n > hi {
			return 0, fmt.Errorf("%q: percentage %d outside %d-%d", v, n, lo, hi)
		}
		return n, nil
	}
	switch models.StrategyKind(kind) {
	case StrategyImmediate:
		if hasArg {
			return Strategy{}, fmt.Errorf("%q: immediate takes no percentage", v)
		}
		return Strategy{Kind: StrategyImmediate}, nil
	case StrategyCanary:
		n, err := pct(1, 99)
		return Strategy{Kind: StrategyCanary, CanaryPercent: n}, err
	case StrategyShadow:
		n, err := pct(1, 100)
		return Strategy{Kind: StrategyShadow, ShadowPercent: n}, err
	}
	return Strategy{}, fmt.Errorf("%q: unknown strategy (want immediate, canary:P or shadow:P)", v)
}

// DesiredModel is one model's desired state from a Device.
type DesiredModel struct {
	Version  string
	Strategy Strategy
	// SHA256, when set, is the sha256 the version's model.onnx must have;
	// the reconciler refuses a version whose manifest says otherwise.
	SHA256 string
}

// Property is one twin property's name and value as received.
type Property struct {
	Name, Value string
}

// RejectReason is a refusal code; it is reported as the M.reason value, so
// it stays within the twin alphabet.
type RejectReason string

// Refusal codes.
const (
	ReasonInvalidPropertyName RejectReason = "InvalidPropertyName"
	ReasonUnknownProperty     RejectReason = "UnknownProperty"
	ReasonDuplicateProperty   RejectReason = "DuplicateProperty"
	ReasonReadOnlyProperty    RejectReason = "ReadOnlyProperty"
	ReasonInvalidModelName    RejectReason = "InvalidModelName"
	ReasonInvalidValue        RejectReason = "InvalidValue"
	ReasonInvalidVersion      RejectReason = "InvalidVersion"
	ReasonInvalidRollout      RejectReason = "InvalidRollout"
	ReasonInvalidSHA256       RejectReason = "InvalidSHA256"
	ReasonMissingVersion      RejectReason = "MissingVersion"
	ReasonTooManyModels       RejectReason = "TooManyModels"
	// ReasonUnknownModel comes from the Applier: no such model anywhere
	// the node can fetch from.
	ReasonUnknownModel RejectReason = "UnknownModel"
	// ReasonUnknownVersion comes from the Applier: the model exists, the
	// version does not.
	ReasonUnknownVersion RejectReason = "UnknownVersion"
)

// Rejection is one refused property or model.
type Rejection struct {
	// Property is the property name as received (may be outside the
	// alphabet; never reported back then).
	Property string
	// Model is the model it belongs to, "" when the name does not parse.
	Model  string
	Reason RejectReason
	Detail string
}

func (r Rejection) Error() string {
	if r.Model != "" {
		return fmt.Sprintf("model %s: property %q: %s: %s", r.Model, r.Property, r.Reason, r.Detail)
	}
	return fmt.Sprintf("property %q: %s: %s", r.Property, r.Reason, r.Detail)
}

// ParseDesired decodes the desired values of a Device's properties into
// desired models. Properties whose desired value is empty are skipped (a
// Device lists its ReadOnly properties with no desired value). A model with
// any refused property is absent from the result and named in the
// rejections; the caller decides what it keeps running. A model whose
// version is "none" or "" is not wanted and is absent from both.
func ParseDesired(props []Property) (map[string]DesiredModel, []Rejection) {
	var rej []Rejection
	if len(props) > MaxProperties {
		return nil, []Rejection{{Reason: ReasonTooManyModels, Detail: fmt.Sprintf("%d properties, limit %d", len(props), MaxProperties)}}
	}
	type raw struct{ version, rollout, sha string }
	byModel := map[string]*raw{}
	bad := map[string]bool{}
	seen := map[string]bool{}
	refuse := func(p Property, model string, reason RejectReason, format string, a ...any) {
		rej = append(rej, Rejection{Property: p.Name, Model: model, Reason: reason, Detail: fmt.Sprintf(format, a...)})
		if model != "" {
			bad[model] = true
		}
	}
	for _, p := range props {
		if !ValidName(p.Name) {
			refuse(p, "", ReasonInvalidPropertyName, "want %s", namePattern)
			continue
		}
		model, field, ok := SplitPropertyName(p.Name)
		if !ok || !field.valid() {
			if p.Value != "" {
				refuse(p, "", ReasonUnknownProperty, "want <model>.<field> with field one of %v", Fields)
			}
			continue
		}
		if err := models.ValidModelName(model); err != nil {
			refuse(p, "", ReasonInvalidModelName, "%v", err)
			continue
		}
		if seen[p.Name] {
			refuse(p, model, ReasonDuplicateProperty, "property listed twice")
			continue
		}
		seen[p.Name] = true
		if p.Value == "" {
			continue
		}
		if !field.Writable() {
			refuse(p, model, ReasonReadOnlyProperty, "%s is reported by the node, not desired", field)
			continue
		}
		if !ValidValue(p.Value) {
			refuse(p, model, ReasonInvalidValue, "value outside %s", valuePattern)
			continue
		}
		r := byModel[model]
		if r == nil {
			r = &raw{}
			byModel[model] = r
		}
		switch field {
		case FieldVersion:
			if p.Value != None {
				if err := models.ValidVersion(p.Value); err != nil {
					refuse(p, model, ReasonInvalidVersion, "%v", err)
					continue
				}
			}
			r.version = p.Value
		case FieldRollout:
			if _, err := ParseStrategy(p.Value); err != nil {
				refuse(p, model, ReasonInvalidRollout, "%v", err)
				continue
			}
			r.rollout = p.Value
		case FieldSHA256:
			if err := models.ValidDigest(p.Value); err != nil {
				refuse(p, model, ReasonInvalidSHA256, "%v", err)
				continue
			}
			r.sha = p.Value
		}
	}
	out := map[string]DesiredModel{}
	names := make([]string, 0, len(byModel))
	for m := range byModel {
		names = append(names, m)
	}
	sort.Strings(names)
	for _, m := range names {
		r := byModel[m]
		if bad[m] {
			continue
		}
		if r.version == "" || r.version == None {
			if r.rollout != "" || r.sha != "" {
				rej = append(rej, Rejection{Property: PropertyName(m, FieldVersion), Model: m, Reason: ReasonMissingVersion,
					Detail: "rollout or sha256 given without a version"})
			}
			continue
		}
		d := DesiredModel{Version: r.version, Strategy: Strategy{Kind: StrategyImmediate}, SHA256: r.sha}
		if r.rollout != "" {
			d.Strategy, _ = ParseStrategy(r.rollout)
		}
		out[m] = d
	}
	if len(out) > MaxModels {
		return nil, []Rejection{{Reason: ReasonTooManyModels, Detail: fmt.Sprintf("%d models, limit %d", len(out), MaxModels)}}
	}
	return out, rej
}
