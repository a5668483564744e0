// Package edgenode holds the module-wide tests (import boundaries, package
// documentation). The node itself lives in the packages below: see README.md
// and docs/architecture.md.
package edgenode
