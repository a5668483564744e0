// Package reconcile brings the node to its desired state. Desired state
// comes from any source — the MQTT desired-state watcher (node topic over
// group topics), a KubeEdge bridge (DMI or EventBus, through KubeEdge) —
// through one intake (Apply for the watcher, ApplyDesired for the others),
// each source's generations persisted in the store. Per model, the source
// that accepted a desired state most recently wins.
//
// Every desired model has its own worker, so a stuck or failing model never
// delays another: it reads the signed manifest, records it (Announced),
// fetches the chunks (Downloading, with progress), verifies them (Verifying
// → Ready), then hands the version to the serving owner (node/serving's
// Apply), which decides by its precedence rules and activates it or rolls
// it out. A transfer that makes no progress is retried with backoff and
// fails the version (TransferStalled) after a bounded number of attempts;
// a Failed version is tried again once per newer desired state.
//
// Cloud is the node's side of the MQTT link (broker, link, fetcher,
// watcher, and the publisher of status and events, which consumes the
// reconciler's and the owner's change notifications). Without a cloud link
// the reconciler still serves the other sources from what the store holds.
//
// Status uses the one vocabulary of package models (states, failure and
// progress reasons); reasons come from the real link state.
package reconcile
