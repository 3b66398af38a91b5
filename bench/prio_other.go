//go:build !linux

package bench

import "errors"

// SetNice is supported on Linux only.
func SetNice(int) error { return errors.New("setting the nice value is supported on Linux only") }
