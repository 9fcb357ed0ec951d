package crashpoint

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, s := range []string{"checkout:reserve", "checkout:payment-id", "checkout:await-payment", "checkout:settle",
		"checkout:payment-close", "checkout:dispatch", "checkout:outcome", "dispatch:dispatch-leg:1", "dispatch:dispatch-leg:10",
		"release:release", "refund:refund-provider", "refund:refund-record", "cancel-order:cancel-order"} {
		if _, err := Parse(s); err != nil {
			t.Errorf("Parse(%q): %v", s, err)
		}
	}
	// Numbered steps are gone: a number could name a different step after
	// the workflow changes, a name cannot.
	for _, s := range []string{"checkout:4", "dispatch:3", "refund:1", "checkout:mark-paid", "checkout:cancel", "payment:reserve",
		"dispatch:dispatch-leg", "dispatch:dispatch-leg:N", "dispatch:dispatch-leg:0", "dispatch:dispatch-leg:11",
		"dispatch:dispatch-leg:03", "checkout:reserve:1", "reserve", ""} {
		_, err := Parse(s)
		if err == nil || !strings.Contains(err.Error(), "checkout:settle") {
			t.Errorf("Parse(%q) = %v, want an error listing the points", s, err)
		}
	}
}

// TestAfterOtherPoints: After returns (the process lives on) everywhere but
// at its own point; exiting there is what internal/storetest's
// TestCrashPoints checks, on a real process.
func TestAfterOtherPoints(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := Parse("dispatch:dispatch-leg:3")
	if err != nil {
		t.Fatal(err)
	}
	p.After(logger, "dispatch", Leg(2))
	p.After(logger, "dispatch", Leg(4))
	p.After(logger, "checkout", Leg(3))
	Point{}.After(logger, "checkout", "reserve")
}
