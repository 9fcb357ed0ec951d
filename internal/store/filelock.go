package store

import (
	"fmt"
	"os"
	"time"
)

// One store per SQLite file.
//
// Two stores on one SQLite file would each recover the other's workflows as
// their own: DBOS on SQLite has one executor per file in mind, and both
// would resume every PENDING checkout they find (webhooks then waited 8–10
// s while the two fought over them). So a store holds the file: Open takes
// an exclusive flock(2) on a sidecar, PATH.lock, and a second Open fails at
// once with an *InUseError that names the file and the holder (its process
// ID, executor and start time, which the holder wrote into the lock file).
//
// The kernel releases the lock when the holder's last descriptor of the
// lock file closes, and so when its process dies however it dies: the
// supervisor's next child (internal/supervisor), started after the dead one
// was reaped, takes the file over at once, and a store killed with SIGKILL
// leaves nothing to clean up. The lock file stays; only the flock on it
// means anything (deleting it while held would let a second store lock a
// new file of the same name). Other readers, such as the load tool's
// checker or sqlite3, do not look at it. flock(2) works on local
// filesystems; on a network filesystem it may not exclude a store on
// another machine, which SQLite's own locking does not promise either.

// InUseError is a SQLite file another store holds.
type InUseError struct {
	Path     string // the database file
	LockPath string // its lock file
	Holder   string // what the holder wrote: "pid N, executor X, since T"; "" if unknown
}

func (e *InUseError) Error() string {
	holder := e.Holder
	if holder == "" {
		holder = "a store that is starting"
	}
	return fmt.Sprintf("sqlite %s is in use by another store (%s; lock %s): two stores on one file would recover each other's workflows; stop that one, or give this one its own DATABASE_URL",
		e.Path, holder, e.LockPath)
}

// holdFile locks the SQLite file at path for this process (nil on systems
// without flock), recording executor as its holder.
func holdFile(path, executor string, now time.Time) (*os.File, error) {
	if executor == "" {
		executor = "(none)"
	}
	holder := fmt.Sprintf("pid %d, executor %q, since %s", os.Getpid(), executor, now.UTC().Format(time.RFC3339))
	return lockFile(path, holder)
}
