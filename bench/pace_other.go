//go:build !linux

package bench

import (
	"time"
)

func lockPacer()   {}
func unlockPacer() {}

func sleepNS(ns int64) { time.Sleep(time.Duration(ns)) }
