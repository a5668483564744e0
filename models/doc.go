// Package models is the node's model store: model files stored by sha256 on
// disk (models/blobstore), their catalog and version states in bbolt
// (models/catalog), signed manifests, and garbage collection. Everything the
// node must remember across a restart or an outage goes through it.
package models
