// Package storetest is the one rig for every test that starts the real
// widget-store binary. It is a thin layer over internal/loadgen, which owns
// the process type (loadgen.Store: build, start, SIGKILL, restart on the same
// port) and the invariant checker (loadgen.CheckInvariants); storetest adds
// what a *testing.T needs around them:
//
//   - Databases: ForEachDB runs a test once per database flavour, as
//     parallel subtests "sqlite" (a fresh file in the test's temporary
//     directory) and "postgres" (a database created on the server
//     TEST_DATABASE_URL names, dropped when the test ends). Without
//     TEST_DATABASE_URL the Postgres cases skip locally and fail when CI is
//     set: CI must test Postgres.
//   - The binary: Binary builds the store once per test process
//     (CGO_ENABLED=0, as it ships), or uses WIDGET_STORE_BIN=/path/to/binary.
//   - Processes: Start and StartWith run the binary on a database, with extra
//     environment, and return once /healthz answers 200; the store's log goes
//     to the test log. Kill and Restart drive it; at the end of the
//     test a store still running is stopped with SIGTERM and must exit 0.
//   - HTTP: Call, MustCall, GetJSON, Inventory, WaitOrder, MetricValue…,
//     which fail the test on a transport error.
//   - The database, read directly: WorkflowCount and RecordedSteps (DBOS's
//     own tables), and CheckInvariants, which stops the store and checks
//     loadgen's five invariants against the clients' acknowledgements.
//
// Every wait polls for a condition (an HTTP answer, a process exit) with a
// deadline; nothing sleeps and hopes.
//
// The tests of the store's behaviour that need a real process (crashes,
// signals, the supervisor, a browser) live in this package's _test files;
// tests of other packages may use the rig too.
package storetest
