package views

import (
	"strconv"
	"time"
)

// clock formats a time to the millisecond, in the server's zone.
func clock(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.Format("15:04:05.000")
}

func runLabel(run, current int64) string {
	if run == 0 {
		return "run ?"
	}
	s := "run #" + strconv.FormatInt(run, 10)
	if run == current {
		s += " · this process"
	}
	return s
}
