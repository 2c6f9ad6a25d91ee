// Package e2e holds mito's end-to-end tests: they build the real mito and
// mito-shim binaries, start a coordinator as a user would, and drive it
// with `mito client`. It has no code of its own.
package e2e
