package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSQLiteFileHeldByOneStore: while one store has a SQLite file open, a
// second Open of it fails with an *InUseError naming the file and the holder
// (its pid and executor); once the first is closed, the file opens again.
// (TestSecondStoreOnOneSQLiteFile in internal/storetest does it with two
// processes and the supervisor.)
func TestSQLiteFileHeldByOneStore(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "held.db")
	first, err := Open(ctx, "sqlite:"+path, Options{ExecutorID: "first"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, "sqlite:"+path, Options{ExecutorID: "second"})
	var inUse *InUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("second Open: %v, want an *InUseError", err)
	}
	for _, want := range []string{path + " is in use by another store", "pid " + strconv.Itoa(os.Getpid()), `executor "first"`, path + ".lock"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("second Open's error %q does not say %q", err, want)
		}
	}
	first.Close()
	again, err := Open(ctx, "sqlite:"+path, Options{ExecutorID: "second"})
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	again.Close()
}
