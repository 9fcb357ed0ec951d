package retention

import (
	"strings"
	"testing"
	"time"
)

// TestParse is RETENTION's one verdict: off, days, or a duration of at
// least a second; anything else is refused, naming the setting and the value.
func TestParse(t *testing.T) {
	for s, want := range map[string]time.Duration{"off": 0, "0": 0, "30d": 30 * 24 * time.Hour, "72h": 72 * time.Hour, "1s": time.Second, "36500d": 36500 * 24 * time.Hour} {
		if got, err := Parse(s); err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"30", "10ms", "xd", "-5d", "0d", "36501d", "", "on"} {
		if got, err := Parse(s); err == nil || !strings.Contains(err.Error(), `RETENTION "`+s+`": want off, a number of days such as 30d`) {
			t.Errorf("Parse(%q) = %v, %v; want an error naming RETENTION and %q", s, got, err, s)
		}
	}
}
