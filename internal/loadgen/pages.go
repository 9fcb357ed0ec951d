package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// ReadPages reads a paged JSON list of the store (GET /orders, GET
// /late_payments): it GETs rawURL and then every page the Link rel="next"
// headers lead to, until a page has none, and returns the items of every
// page in order. header is sent with every request (e.g. the admin token);
// requests is how many it made, failed ones included. A page that is not a
// 200 with a JSON array, or a Link that leads back to a page already read,
// is an error.
func ReadPages[T any](ctx context.Context, c *http.Client, rawURL string, header http.Header) (items []T, requests int, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, 0, err
	}
	seen := map[string]bool{}
	for {
		if seen[u.String()] {
			return items, requests, fmt.Errorf("GET %s: the Link header leads back to a page already read", u.RequestURI())
		}
		seen[u.String()] = true
		var page []T
		requests++
		next, err := getPage(ctx, c, u, header, &page)
		if err != nil {
			return items, requests, err
		}
		items = append(items, page...)
		if next == nil {
			return items, requests, nil
		}
		u = next
	}
}

// getPage GETs u into page and returns the next page's URL (nil: none).
func getPage(ctx context.Context, c *http.Client, u *url.URL, header http.Header, page any) (*url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close() // a read-only body: closing cannot lose anything
	if resp.StatusCode != http.StatusOK {
		// The body is only the error's detail: a failed read leaves what was read.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s: %s %q", u.RequestURI(), resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(page); err != nil {
		return nil, fmt.Errorf("GET %s: %w", u.RequestURI(), err)
	}
	next, ok, err := NextLink(resp.Header)
	if err != nil || !ok {
		return nil, err
	}
	return u.ResolveReference(next), nil
}

// NextLink finds the target of the rel="next" link among a response's Link
// headers (RFC 8288: `<uri-reference>; rel="next"`, several links separated
// by commas, rel possibly unquoted or holding several space-separated
// relations). ok is false when there is none; a header it cannot parse is an
// error.
func NextLink(h http.Header) (target *url.URL, ok bool, err error) {
	for _, v := range h.Values("Link") {
		links, err := parseLinks(v)
		if err != nil {
			return nil, false, fmt.Errorf("header Link %q: %w", v, err)
		}
		for _, l := range links {
			for rel := range strings.FieldsSeq(l.params["rel"]) {
				if strings.EqualFold(rel, "next") {
					u, err := url.Parse(l.target)
					if err != nil {
						return nil, false, fmt.Errorf("header Link %q: %w", v, err)
					}
					return u, true, nil
				}
			}
		}
	}
	return nil, false, nil
}

type link struct {
	target string
	params map[string]string // lower-cased names; the first of each wins, as RFC 8288 says for rel
}

// parseLinks parses one Link header value: link *( "," link ), each
// `<target>` then `; name[=value]` parameters, a value a token or a quoted
// string.
func parseLinks(s string) ([]link, error) {
	var out []link
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return out, nil
		}
		if s[0] == ',' { // an empty element: allowed by the list syntax
			s = s[1:]
			continue
		}
		if s[0] != '<' {
			return nil, fmt.Errorf("want '<' at %q", s)
		}
		end := strings.IndexByte(s, '>')
		if end < 0 {
			return nil, fmt.Errorf("no '>' after %q", s)
		}
		l := link{target: s[1:end], params: map[string]string{}}
		s = s[end+1:]
		for {
			s = strings.TrimLeft(s, " \t")
			if s == "" || s[0] == ',' {
				break
			}
			if s[0] != ';' {
				return nil, fmt.Errorf("want ';' or ',' at %q", s)
			}
			s = strings.TrimLeft(s[1:], " \t")
			n := strings.IndexAny(s, "=;, \t")
			if n < 0 {
				n = len(s)
			}
			name := strings.ToLower(s[:n])
			if name == "" {
				return nil, fmt.Errorf("empty parameter name at %q", s)
			}
			s = strings.TrimLeft(s[n:], " \t")
			var value string
			if s != "" && s[0] == '=' {
				var err error
				if value, s, err = paramValue(strings.TrimLeft(s[1:], " \t")); err != nil {
					return nil, err
				}
			}
			if _, dup := l.params[name]; !dup {
				l.params[name] = value
			}
		}
		out = append(out, l)
	}
}

// paramValue reads a token or a quoted string (with \-escapes) off the front
// of s and returns it and the rest.
func paramValue(s string) (value, rest string, err error) {
	if s == "" || s[0] != '"' {
		n := strings.IndexAny(s, ";, \t")
		if n < 0 {
			n = len(s)
		}
		return s[:n], s[n:], nil
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 == len(s) {
				return "", "", fmt.Errorf("unterminated quoted string %q", s)
			}
			i++
			b.WriteByte(s[i])
		case '"':
			return b.String(), s[i+1:], nil
		default:
			b.WriteByte(s[i])
		}
	}
	return "", "", fmt.Errorf("unterminated quoted string %q", s)
}
