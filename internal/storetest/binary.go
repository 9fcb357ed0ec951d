package storetest

import (
	"os"
	"sync"
	"testing"

	"widget-store/internal/loadgen"
)

// BinaryEnv names a prebuilt store binary to test instead of building one.
const BinaryEnv = "WIDGET_STORE_BIN"

// built is the store binary this test process built. It is the rig's one
// piece of package-level state, on purpose: building takes seconds and every
// test of the process runs the same binary, so the first caller builds it
// and the sync.Once makes any concurrent first callers wait for that build
// rather than start their own. RemoveBinary deletes it.
var built struct {
	once      sync.Once
	dir, path string
	err       error
}

// Binary returns the path of the store binary under test: $WIDGET_STORE_BIN
// when set, otherwise the module's store built once per test process with
// loadgen.Build (CGO_ENABLED=0, as it ships) into a temporary directory. A
// failed build fails every test that asks for the binary, with the
// compiler's output.
func Binary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv(BinaryEnv); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s=%s: %v", BinaryEnv, bin, err)
		}
		return bin
	}
	built.once.Do(func() {
		root, err := loadgen.FindModuleRoot()
		if err != nil {
			built.err = err
			return
		}
		if built.dir, err = os.MkdirTemp("", "widget-store-bin-"); err != nil {
			built.err = err
			return
		}
		built.path, built.err = loadgen.Build(root, built.dir)
	})
	if built.err != nil {
		t.Fatalf("build the store: %v", built.err)
	}
	return built.path
}

// RemoveBinary deletes the binary Binary built, if any. Call it from
// TestMain after m.Run; a prebuilt $WIDGET_STORE_BIN is never touched.
func RemoveBinary() {
	if built.dir != "" {
		os.RemoveAll(built.dir) // best effort: it is a temporary directory
	}
}
