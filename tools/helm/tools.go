//go:build tools

// Package tools pins the helm CLI so that `go build helm.sh/helm/v4/cmd/helm` from this module
// resolves the exact dependency set recorded in go.sum.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
