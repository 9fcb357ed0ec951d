package store

import (
	"context"
	"testing"

	"widget-store/internal/storetest"
)

// TestPoolSize: the Postgres pool DBOS and the store share has poolSize
// connections unless DATABASE_URL sets pool_max_conns, whatever the
// machine's CPUs (pgx's own default, max(4, CPUs), left 3 beside DBOS's
// listener on 2 cores, and requests queued for them).
func TestPoolSize(t *testing.T) {
	db := storetest.NewPostgresDB(t)
	ctx := context.Background()
	for _, c := range []struct {
		url  string
		want int32
	}{
		{db.URL, poolSize},
		{db.URL + "?pool_max_conns=5", 5},
	} {
		d, err := Open(ctx, c.url, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got := d.Pool.Config().MaxConns; got != c.want {
			t.Errorf("%s: pool of %d connections, want %d", RedactURL(c.url), got, c.want)
		}
		d.Close()
	}
}
