// Package version holds the build version, stamped by the Makefile with -ldflags -X.
package version

// Version is the release or git describe of this build; "dev" when not stamped.
var Version = "dev"
