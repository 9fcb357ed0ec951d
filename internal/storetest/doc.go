// Package storetest is the one rig for every test that starts the real
// widget-store binary. It is a thin layer over internal/loadgen, which owns
// the process type (loadgen.Store: build, start, SIGKILL, signals, restart on
// the same port), the shoppers and the invariant checker
// (loadgen.CheckInvariants); storetest adds what a *testing.T needs around
// them:
//
//   - Databases: ForEachDB runs a test once per database flavour, as
//     parallel subtests "sqlite" (a fresh file in the test's temporary
//     directory) and "postgres" (a database created on the server
//     TEST_DATABASE_URL names, dropped when the test ends). Without
//     TEST_DATABASE_URL the Postgres cases skip locally and fail when CI is
//     set: CI must test Postgres. StartPrivatePostgres runs a Postgres server
//     of the test's own, for a test that stops and starts it.
//   - The binary: Binary builds the store once per test process
//     (CGO_ENABLED=0, as it ships), or uses WIDGET_STORE_BIN=/path/to/binary.
//   - Processes: Start and StartWith (Options: extra environment, where the
//     log goes, the built-in supervisor) run the binary on a database and
//     return a Store once /healthz answers 200; the store's log goes to the
//     test log unless Options.Log takes it. A Store is a loadgen.Store bound
//     to its test: Kill, Stop, WaitExit and Signal (SIGSTOP, SIGCONT) are
//     loadgen's, Restart and RestartWith start it again on the same port and
//     database. At the end of the test a store still running is stopped with
//     SIGTERM and must exit 0.
//   - Several instances: StartCluster runs one store per executor ID on one
//     Postgres database and watches every order in it (Cluster: Node,
//     LogLines, QueryRow, TakenOverBy, CheckInvariants); StartShoppers runs
//     loadgen's shoppers in the background until Stop.
//   - HTTP: Call, MustCall, GetJSON, Orders, Inventory, WaitOrder,
//     WaitHealthy, MetricValue…, which fail the test on a transport error.
//     The lists (GET /orders, GET /late_payments) come in pages: Orders,
//     LatePayments and GetPages follow every Link rel="next" to the end.
//   - The database, read directly: WorkflowCount and RecordedSteps (DBOS's
//     own tables), and CheckInvariants, which stops the store and checks
//     loadgen's six invariants against the clients' acknowledgements and
//     what Settle saw while the orders settled.
//
// Every wait polls for a condition (an HTTP answer, a process exit) with a
// deadline (WaitUntil, WaitOrder, …); nothing sleeps and hopes.
//
// The tests of the store's behaviour that need a real process (crashes,
// signals, the supervisor, a browser) live in this package's _test files;
// tests of other packages may use the rig too.
package storetest
