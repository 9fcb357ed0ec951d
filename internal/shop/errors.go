package shop

import (
	"errors"
	"fmt"
	"time"
)

// Kind says what sort of failure an error is, in the domain's words. The web
// layer maps each kind to an HTTP status in one place; an error without a
// kind is the server's own failure (500, and logged).
type Kind string

// Error kinds.
const (
	NotFound     Kind = "not found"    // no such order, payment or checkout
	Conflict     Kind = "conflict"     // contradicts the state: sold out, already paid, already cancelled
	Invalid      Kind = "invalid"      // the client's input is malformed; nothing was changed
	Busy         Kind = "busy"         // still being processed; retrying later will tell
	Unauthorized Kind = "unauthorized" // a signature or token is missing or wrong
	// TooMany: the client holds as many unpaid checkouts as it may; it can
	// pay one or wait for one to expire. RetryAfter says how long.
	TooMany Kind = "too many"
)

// Error is an error with a kind and the message a client may read.
type Error struct {
	Kind    Kind
	Message string
	// RetryAfter, when set, is how long a client should wait before it
	// tries again (Busy, TooMany): the web layer sends it as Retry-After.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Message }

// Errorf makes an error of kind k.
func Errorf(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// KindOf returns the kind of err, or "" for an error without one.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return ""
}
