// Package layering holds no code: its test keeps the package layering of
// doc/ARCHITECTURE.md, failing when an import crosses a line the
// architecture forbids (see rules in layering_test.go).
package layering
