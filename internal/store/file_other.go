//go:build !unix

package store

import (
	"math"
	"os"
)

// lockFile does nothing where flock does not exist: two stores on one file
// are not refused there (see holdFile).
func lockFile(path, holder string) (*os.File, error) { return nil, nil }

// freeBytes is not known without statfs: only refused writes show a full
// disk there.
func freeBytes(path string) (uint64, error) { return math.MaxUint64, nil }
