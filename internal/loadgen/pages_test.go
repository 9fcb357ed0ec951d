package loadgen

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

func TestNextLink(t *testing.T) {
	cases := []struct {
		links []string
		want  string // "" : none
		err   bool
	}{
		{nil, "", false},
		{[]string{`</orders?limit=7&after=b3JkZXJzOjc>; rel="next"`}, "/orders?limit=7&after=b3JkZXJzOjc", false},
		{[]string{`</a>; rel=next`}, "/a", false},
		{[]string{`</p>; rel="prev", </n>; rel="next"`}, "/n", false},
		{[]string{`</p>; rel="prev"`, `</n>;rel="start next"`}, "/n", false},
		{[]string{`</x,y>; title="a, b; c"; rel="NEXT"`}, "/x,y", false},
		{[]string{`</a>; rel="next"; rel="prev"`}, "/a", false}, // the first rel wins
		{[]string{`</a>; rel="prev"; rel="next"`}, "", false},
		{[]string{`</a>; rel="previous"`}, "", false},
		{[]string{`</a>`}, "", false},
		{[]string{`/a; rel="next"`}, "", true},
		{[]string{`</a; rel="next"`}, "", true},
		{[]string{`</a>; rel="next`}, "", true},
		{[]string{`</a> rel="next"`}, "", true},
	}
	for _, tc := range cases {
		h := http.Header{}
		for _, l := range tc.links {
			h.Add("Link", l)
		}
		u, ok, err := NextLink(h)
		switch {
		case tc.err:
			if err == nil {
				t.Errorf("%q: no error, want one", tc.links)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.links, err)
		case tc.want == "" && ok:
			t.Errorf("%q: next %v, want none", tc.links, u)
		case tc.want != "" && (!ok || u.String() != tc.want):
			t.Errorf("%q: next %v (%v), want %s", tc.links, u, ok, tc.want)
		}
	}
}

// ReadPages follows relative links to the end, and refuses a Link that
// leads back to a page it read.
func TestReadPages(t *testing.T) {
	// The handler's writes go unchecked: a failed one fails the client's read.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		from, _ := strconv.Atoi(r.URL.Query().Get("from")) // absent: 0
		if r.URL.Path == "/loop" {
			w.Header().Set("Link", `</loop?from=1>; rel="next"`)
			fmt.Fprint(w, "[]")
			return
		}
		if r.Header.Get("X-Admin-Token") != "t" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		var items []string
		for i := from; i < min(from+3, 10); i++ {
			items = append(items, strconv.Itoa(i))
		}
		if from+3 < 10 {
			w.Header().Set("Link", "<list?from="+strconv.Itoa(from+3)+`>; rel="next"`)
		}
		fmt.Fprint(w, "["+strings.Join(items, ",")+"]")
	}))
	defer srv.Close()
	ctx := context.Background()
	got, requests, err := ReadPages[int](ctx, srv.Client(), srv.URL+"/list", http.Header{"X-Admin-Token": {"t"}})
	if err != nil || requests != 4 || fmt.Sprint(got) != "[0 1 2 3 4 5 6 7 8 9]" {
		t.Errorf("ReadPages: %v in %d requests, %v", got, requests, err)
	}
	if _, _, err := ReadPages[int](ctx, srv.Client(), srv.URL+"/list", nil); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("ReadPages without the token: %v, want the 401", err)
	}
	if _, requests, err := ReadPages[int](ctx, srv.Client(), srv.URL+"/loop", nil); err == nil || requests != 2 {
		t.Errorf("ReadPages of a loop: %d requests, %v; want an error after 2", requests, err)
	}
}
