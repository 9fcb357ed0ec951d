package storetest

import (
	"os"
	"testing"
)

// TestMain removes the binary the rig built, once every test is done.
func TestMain(m *testing.M) {
	code := m.Run()
	RemoveBinary()
	os.Exit(code)
}

// phase runs one named phase of a long test as a subtest; a failed phase
// ends the test, since the phases after it build on it.
func phase(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, f) {
		t.FailNow()
	}
}
