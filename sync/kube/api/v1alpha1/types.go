// Package v1alpha1 is the ModelVersion resource (group edge.edgeai.dev): one
// version of one model, rolled out to the edge nodes a label selector picks,
// with the share of inference traffic it gets while on trial. The
// controller in sync/kube turns each one into a fleet rollout (the shared
// sync/rollout engine) over MQTT and keeps the rollout's state in the
// resource's status.
//
// deepcopy.go and deploy/kubernetes/crd/ are generated from these types by
// controller-gen (make generate-crd).
//
// +kubebuilder:object:generate=true
// +groupName=edge.edgeai.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of the resource.
var GroupVersion = schema.GroupVersion{Group: "edge.edgeai.dev", Version: "v1alpha1"}

// AddToScheme registers the types with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &ModelVersion{}, &ModelVersionList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// ModelVersion rolls one version of a model out to the selected edge nodes.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mv,categories=edge
// +kubebuilder:printcolumn:name="Model",type=string,JSONPath=`.spec.model`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.spec.version`
// +kubebuilder:printcolumn:name="Weight",type=integer,JSONPath=`.spec.trafficWeight`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Nodes",type=string,JSONPath=`.status.progress`
// +kubebuilder:printcolumn:name="Wave",type=string,JSONPath=`.status.wave`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.reason`
// +kubebuilder:printcolumn:name="OnDelete",type=string,JSONPath=`.status.onDelete`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ModelVersion struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ModelVersionSpec   `json:"spec"`
	Status ModelVersionStatus `json:"status,omitempty"`
}

// ModelVersionList is a list of ModelVersion.
//
// +kubebuilder:object:root=true
type ModelVersionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ModelVersion `json:"items"`
}

// ModelVersionSpec is what the operator asks for. What the rollout is
// (model, version, selector, traffic weight, waves) cannot change once
// applied: apply a new ModelVersion instead. paused, rollback and
// deletionPolicy can.
//
// +kubebuilder:validation:XValidation:rule="has(self.nodeSelector) == has(oldSelf.nodeSelector) && has(self.waves) == has(oldSelf.waves)",message="nodeSelector and waves are immutable"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.rollback) || !oldSelf.rollback || (has(self.rollback) && self.rollback)",message="rollback cannot be undone; apply a new ModelVersion"
type ModelVersionSpec struct {
	// Model is the model's name on the nodes.
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="model is immutable"
	Model string `json:"model"`
	// Version is the published version (edgectl publish) the nodes get.
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="version is immutable"
	Version string `json:"version"`
	// ManifestSHA256 pins the published manifest (the sha256 of its signed
	// bytes, as edgectl publish prints): the rollout does not start while
	// the broker holds another one. Empty: whatever is published.
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9a-f]{64}$`
	ManifestSHA256 string `json:"manifestSHA256,omitempty"`
	// TrafficWeight is the share (percent) of each selected node's
	// inference requests the version answers while on trial: 1-99 is an
	// on-device canary with that share, 100 switches at once (still
	// warmed first), 0 a shadow that answers nothing and is compared on
	// mirrored requests. The on-device gates decide promotion.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="trafficWeight is immutable"
	TrafficWeight int32 `json:"trafficWeight"`
	// NodeSelector picks nodes by the labels they report (arch, os,
	// accelerator, and those configured on the node). Empty: every node.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="nodeSelector is immutable"
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// Waves are cumulative percentages of the selected nodes, ascending,
	// ending at 100 (default [100]).
	// +optional
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=100
	// +kubebuilder:validation:XValidation:rule="size(self) == 0 || self[size(self)-1] == 100",message="the last wave must be 100"
	// +kubebuilder:validation:XValidation:rule="self.isSorted() && self.all(x, self.filter(y, y == x).size() == 1)",message="waves must be ascending with no repeats"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="waves are immutable"
	Waves []int32 `json:"waves,omitempty"`
	// Gates are the on-device checks a canary or shadow must pass.
	// +optional
	Gates *Gates `json:"gates,omitempty"`
	// Abort are the fleet-wide abort criteria.
	// +optional
	Abort *Abort `json:"abort,omitempty"`
	// SuccessPercent starts the next wave once this share of the current
	// one is Active (0: once every node of it finished).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	SuccessPercent int32 `json:"successPercent,omitempty"`
	// MaxPerMinute paces the desired-state writes: at most this many nodes
	// a minute (0: a wave at once; a rollback is never paced).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	MaxPerMinute int32 `json:"maxPerMinute,omitempty"`
	// Ramp raises the pace as nodes succeed (AWS IoT Jobs'
	// exponentialRate), capped by maxPerMinute when that is set.
	// +optional
	Ramp *Ramp `json:"ramp,omitempty"`
	// Continuous keeps the rollout open once every wave finished (phase
	// Active, reason Watching): nodes that come to match nodeSelector
	// later get the version too, paced and judged like the others.
	// +optional
	Continuous bool `json:"continuous,omitempty"`
	// Retries is how many times a node that failed or timed out is given
	// the version again (a new desired generation) before it counts as
	// failed.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	Retries int32 `json:"retries,omitempty"`
	// WaveTimeout aborts a wave not finished this long after it started.
	// +optional
	WaveTimeout *metav1.Duration `json:"waveTimeout,omitempty"`
	// NodeTimeout counts a node that has not finished this long after its
	// wave started as timed out (a failure).
	// +optional
	NodeTimeout *metav1.Duration `json:"nodeTimeout,omitempty"`
	// OnAbort is what an abort does to the started waves: Rollback (write
	// each node's previous version back) or Hold.
	// +optional
	// +kubebuilder:default=Rollback
	// +kubebuilder:validation:Enum=Rollback;Hold
	OnAbort string `json:"onAbort,omitempty"`
	// Paused stops starting waves (the nodes of started waves carry on);
	// false again resumes.
	// +optional
	Paused bool `json:"paused,omitempty"`
	// Rollback stops the rollout and writes each started node's previous
	// version back. It cannot be undone; apply a new ModelVersion instead.
	// +optional
	Rollback bool `json:"rollback,omitempty"`
	// DeletionPolicy is what deleting the ModelVersion does to a rollout
	// that has not finished (phase Progressing or Paused, or Degraded
	// before its last wave finished): Rollback writes each started node's
	// previous version back before the object goes; Keep lets it go at
	// once and the nodes keep what they were sent. A rollback under way
	// (RollingBack) is finished first under either policy; a rollout that
	// finished (Active, Watching, Held, RolledBack, Degraded after its
	// waves) moves no node on delete under either. status.onDelete says
	// which applies now. It can be changed at any time.
	// +optional
	// +kubebuilder:default=Rollback
	// +kubebuilder:validation:Enum=Rollback;Keep
	DeletionPolicy string `json:"deletionPolicy,omitempty"`
}

// Deletion policies (spec.deletionPolicy) and status.onDelete values.
const (
	DeletionRollback = "Rollback"
	DeletionKeep     = "Keep"
)

// Finalizer is the finalizer the controller puts on a ModelVersion once its
// rollout is created, so that deleting it carries out spec.deletionPolicy
// first. Removing it by hand deletes the object at once and moves no node.
const Finalizer = "edge.edgeai.dev/rollout"

// Gates are the on-device gates of a canary (trafficWeight 1-99) or shadow
// (0). Zero fields take the node's defaults.
type Gates struct {
	// MinRequests the candidate must answer (or be compared on) before
	// promotion.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MinRequests int64 `json:"minRequests,omitempty"`
	// MinDuration of the trial.
	// +optional
	MinDuration *metav1.Duration `json:"minDuration,omitempty"`
	// MaxDuration bounds the trial.
	// +optional
	MaxDuration *metav1.Duration `json:"maxDuration,omitempty"`
	// MaxErrorRate of the candidate's runs, 0-1, as a decimal string
	// ("0.01").
	// +optional
	// +kubebuilder:validation:Pattern=`^(0(\.[0-9]+)?|1(\.0+)?)$`
	MaxErrorRate string `json:"maxErrorRate,omitempty"`
	// MaxP99Ratio of candidate to active p99 latency, ≥ 1, as a decimal
	// string ("1.5").
	// +optional
	// +kubebuilder:validation:Pattern=`^[1-9][0-9]*(\.[0-9]+)?$`
	MaxP99Ratio string `json:"maxP99Ratio,omitempty"`
	// ShadowPercent is the share of requests mirrored to a shadow
	// (trafficWeight 0; default 100).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	ShadowPercent int32 `json:"shadowPercent,omitempty"`
}

// Abort are the fleet-wide abort criteria.
type Abort struct {
	// MaxFailedPercent of the finished nodes that may fail, roll back or
	// time out (default 10).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxFailedPercent *int32 `json:"maxFailedPercent,omitempty"`
	// MinFinished nodes before the criteria apply (default 1).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MinFinished *int32 `json:"minFinished,omitempty"`
	// ByType are criteria per failure type.
	// +optional
	// +listType=map
	// +listMapKey=type
	ByType []TypeCriterion `json:"byType,omitempty"`
}

// TypeCriterion aborts when nodes of one failure type exceed a share of the
// finished nodes.
type TypeCriterion struct {
	// +kubebuilder:validation:Enum=Failed;RolledBack;TimedOut
	Type string `json:"type"`
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxPercent int32 `json:"maxPercent"`
	// +optional
	// +kubebuilder:validation:Minimum=0
	MinFinished int32 `json:"minFinished,omitempty"`
}

// Phase is where a ModelVersion is.
type Phase string

// Phases.
const (
	// PhasePending: not started: waiting for the manifest or for a node to
	// match, or the spec is refused (the Ready condition says why).
	PhasePending Phase = "Pending"
	// PhaseProgressing: waves are running.
	PhaseProgressing Phase = "Progressing"
	// PhasePaused: spec.paused.
	PhasePaused Phase = "Paused"
	// PhaseActive: every selected node finished and none failed.
	PhaseActive Phase = "Active"
	// PhaseDegraded: nodes failed, rolled back or timed out (status.reason
	// names the most common node reason, e.g. ChecksumMismatch), and the
	// rollout was not rolled back.
	PhaseDegraded Phase = "Degraded"
	// PhaseRollingBack and PhaseRolledBack: aborted (criteria or
	// spec.rollback) and the previous versions written back.
	PhaseRollingBack Phase = "RollingBack"
	PhaseRolledBack  Phase = "RolledBack"
	// PhaseHeld: aborted with onAbort Hold, or stopped because another
	// writer changed a node's desired state.
	PhaseHeld Phase = "Held"
)

// Condition types.
const (
	// ConditionReady: the version is Active on every selected node.
	ConditionReady = "Ready"
	// ConditionProgressing: the rollout is moving (waves running).
	ConditionProgressing = "Progressing"
	// ConditionDegraded: some nodes failed it; the reason is theirs.
	ConditionDegraded = "Degraded"
	// ConditionDeleting: the object is deleted and the controller cannot
	// carry out spec.deletionPolicy yet (reason RollbackStalled; the
	// message says why and how to force the deletion).
	ConditionDeleting = "Deleting"
)

// Ramp is an exponential pace: basePerMinute nodes a minute at first,
// times factor for every everySucceeded nodes Active.
type Ramp struct {
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	BasePerMinute int32 `json:"basePerMinute"`
	// Factor, a decimal string over 1 and at most 5 (e.g. "2", "1.5").
	// +kubebuilder:validation:Pattern=`^[1-5](\.[0-9]+)?$`
	Factor string `json:"factor"`
	// +kubebuilder:validation:Minimum=1
	EverySucceeded int32 `json:"everySucceeded"`
}

// ModelVersionStatus is what the controller observed and decided.
type ModelVersionStatus struct {
	// ObservedGeneration is the spec generation this status is about.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// Reason is a CamelCase word for the phase (NoMatchingNodes,
	// ManifestNotPublished, ChecksumMismatch, AbortCriteria, ...).
	// +optional
	Reason string `json:"reason,omitempty"`
	// Message says it for a person.
	// +optional
	Message string `json:"message,omitempty"`
	// RolloutID names the fleet rollout on the wire (the nodes' desired
	// state and status carry it).
	// +optional
	RolloutID string `json:"rolloutID,omitempty"`
	// Nodes selected, and Active on the version.
	// +optional
	Nodes int32 `json:"nodes,omitempty"`
	// +optional
	Active int32 `json:"active,omitempty"`
	// Joined counts the nodes that joined after start (continuous).
	// +optional
	Joined int32 `json:"joined,omitempty"`
	// Outside counts the nodes that match nodeSelector but are not in the
	// rollout (they joined after start without continuous, or wait for
	// another rollout of the model on them).
	// +optional
	Outside int32 `json:"outside,omitempty"`
	// Retried counts the nodes given the version again at least once.
	// +optional
	Retried int32 `json:"retried,omitempty"`
	// Progress is "active/nodes" for kubectl get.
	// +optional
	Progress string `json:"progress,omitempty"`
	// Wave is "started/waves" for kubectl get.
	// +optional
	Wave string `json:"wave,omitempty"`
	// OnDelete is what deleting the ModelVersion would do now: Rollback
	// (the rollout has not finished and spec.deletionPolicy is Rollback,
	// or a rollback is under way) or Keep (the nodes keep what they were
	// sent).
	// +optional
	OnDelete string `json:"onDelete,omitempty"`
	// Waves are the per-wave node counts.
	// +optional
	Waves []WaveStatus `json:"waves,omitempty"`
	// NodeReasons counts the failed nodes' reasons.
	// +optional
	NodeReasons map[string]int32 `json:"nodeReasons,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Rollout is the rollout engine's record (members, previous versions,
	// history): the controller's whole state, so any replica resumes it.
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	Rollout *runtime.RawExtension `json:"rollout,omitempty"`
}

// WaveStatus counts one wave's nodes by state.
type WaveStatus struct {
	// Percent is the wave's cumulative share of the selected nodes.
	Percent int32 `json:"percent"`
	// +optional
	Started *metav1.Time `json:"started,omitempty"`
	Nodes   int32        `json:"nodes"`
	// +optional
	Pending int32 `json:"pending,omitempty"`
	// +optional
	Downloading int32 `json:"downloading,omitempty"`
	// +optional
	Canary int32 `json:"canary,omitempty"`
	// +optional
	Active int32 `json:"active,omitempty"`
	// +optional
	Failed int32 `json:"failed,omitempty"`
	// +optional
	RolledBack int32 `json:"rolledBack,omitempty"`
	// +optional
	TimedOut int32 `json:"timedOut,omitempty"`
}
