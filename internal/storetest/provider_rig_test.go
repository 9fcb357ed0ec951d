package storetest

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"

	"widget-store/internal/loadgen"
)

// Modes of a testProvider.
const (
	providerUp      int32 = iota // passes the call on to the store's stand-in
	providerDown                 // 503: the refund step retries
	providerRefuses              // 400: the refund workflow ends in ERROR
)

// testProvider is a payment provider for the refund workflow (PROVIDER_URL
// points at it) in front of the store's own stand-in provider: up, it
// passes each call on; down, it answers 503, as a provider that is down
// would; refusing, 400, as one that refuses the refund would.
type testProvider struct {
	srv     *httptest.Server
	target  atomic.Pointer[url.URL]
	mode    atomic.Int32
	refused atomic.Int64 // calls not passed on
}

func newTestProvider(t *testing.T, mode int32) *testProvider {
	p := &testProvider{}
	p.mode.Store(mode)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := p.target.Load()
		switch {
		case p.mode.Load() == providerRefuses:
			p.refused.Add(1)
			http.Error(w, "refund refused (test)", http.StatusBadRequest)
		case p.mode.Load() == providerDown || target == nil:
			p.refused.Add(1)
			http.Error(w, "provider down (test)", http.StatusServiceUnavailable)
		default:
			httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
		}
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// Env is the store's PROVIDER_URL setting for this provider.
func (p *testProvider) Env() string { return "PROVIDER_URL=" + p.srv.URL + "/provider" }

// pointAt makes the provider pass calls on to the store at base.
func (p *testProvider) pointAt(t *testing.T, base string) {
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	p.target.Store(u)
}

// startBehind starts the store on db with env, behind provider p.
func startBehind(t *testing.T, db *loadgen.Database, p *testProvider, env ...string) *Store {
	st := Start(t, db, append(env, p.Env())...)
	p.pointAt(t, st.Base())
	return st
}
