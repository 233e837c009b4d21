//go:build tools

// Package tools pins promtool so that `go build github.com/prometheus/prometheus/cmd/promtool`
// from this module resolves the exact dependency set recorded in go.sum.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
