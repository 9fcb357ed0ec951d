// Package retention deletes the DBOS records of purchases finished long ago.
//
// Every purchase leaves DBOS rows behind: the checkout's and the dispatch's
// workflow status, input, output and step checkpoints, the payment's
// notification, a refund's. They are what recovery replays, and once the
// order is final nothing will ever replay them again, but they grow with
// every sale. With RETENTION set (say 30d), a Service deletes, through DBOS's
// own API (dbos.DeleteWorkflows, which removes a workflow's status, inputs,
// outputs and checkpoints in one transaction), every workflow that
//
//   - finished (SUCCESS, ERROR or CANCELLED) more than RETENTION ago, and
//   - belongs to an order that is final (DISPATCHED or CANCELLED) with no
//     refund still to make for its payment, or to no order at all (a
//     checkout that found the shelf empty, or an operator's fork, which does
//     nothing).
//
// It never deletes a workflow still PENDING or ENQUEUED, one of an order
// not final yet, one of an order whose late payment is not refunded yet
// (its refund workflow, dead or alive, is the record an operator resumes),
// or a workflow that is not the store's. Dead-lettered workflows
// (MAX_RECOVERY_ATTEMPTS_EXCEEDED) are an operator's to look at and stay.
//
// Stripe's event ids (stripe_events), kept only to recognise a redelivery,
// are deleted once older than both RETENTION and the three days Stripe may
// redeliver an event (StripeRedelivery). A Stripe order's payment session
// and PaymentIntent (payment_sessions, payment_intents) are part of its
// record and stay with it: the session's URL answers a client retrying its
// key, the PaymentIntent is what an operator's refund refunds.
//
// The store's own rows are not deleted: an order is the business record,
// and the order row is also what answers a client that retries a key whose
// workflow is gone (the checkout's reserve step finds the key's order and
// answers from it; see steps.go). Each pass that deletes anything records
// itself in retention_passes (when, and the cutoff), so the timeline can
// say "deleted by retention on …" for an order whose workflows are gone.
//
// A pass sweeps DBOS's finished workflows in the order they finished, a page
// at a time (store.FinishedWorkflows, which says why it reads DBOS's table
// itself).
// Deleted ones leave the list, so the next page starts after the ones it
// kept (an offset of the kept count); a sweep ends at a short page. Every
// instance runs a Service, and they take turns (periodic.Turns): one sweep
// per interval across all of them. Two that overlap all the same (a sweep
// longer than the interval) are harmless: a delete is idempotent, and two
// instances racing delete the same rows once.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/periodic"
	"widget-store/internal/shop"
	"widget-store/internal/store"
)

// page is how many workflows one step of a sweep lists, and deletes in one
// transaction at most: on SQLite the delete holds the one writer, so a page
// is kept short enough not to be felt by a checkout waiting behind it.
const page = 200

// Service is the background service.
type Service struct {
	db     *store.DB
	dctx   dbos.Context
	after  time.Duration
	every  time.Duration
	now    func() time.Time
	logger *slog.Logger
	loop   *periodic.Loop // nil until Start
}

// New makes a Service that deletes what finished more than after ago,
// looking every interval. now is the clock (time.Now if nil).
func New(db *store.DB, dctx dbos.Context, after, every time.Duration, now func() time.Time, logger *slog.Logger) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{db: db, dctx: dctx, after: after, every: every, now: now,
		logger: logger.With("component", "retention")}
}

// Parse reads RETENTION: off (or 0), a number of days such as 30d, or a Go
// duration of at least a second such as 72h. Off is 0.
func Parse(s string) (time.Duration, error) {
	if s == "off" || s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, perr := strconv.Atoi(days)
		d, err = time.Duration(n)*24*time.Hour, perr
		if n > 100*365 {
			err = errors.New("too long")
		}
	}
	if err != nil || d < time.Second {
		return 0, fmt.Errorf("RETENTION %q: want off, a number of days such as 30d, or a duration of at least 1s such as 72h", s)
	}
	return d, nil
}

// Interval is how often a Service with retention after looks: a tenth of
// it, between a second and an hour.
func Interval(after time.Duration) time.Duration {
	return min(max(after/10, time.Second), time.Hour)
}

// Start sweeps now and then every interval, until Stop, on the instance
// whose turn it is: of all the instances on one database, one sweeps each
// interval (periodic.Turns, turn "retention").
func (s *Service) Start() {
	turns := periodic.NewTurns(s.db, TurnName, s.dctx.GetExecutorID(), s.every)
	s.loop = periodic.StartTurns(turns, func(ctx context.Context) {
		s.logger.Debug("background pass", "pass", TurnName)
		if n, err := s.Pass(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("retention pass failed; trying again at the next", "err", err, "deleted", n)
		} else if n > 0 {
			s.logger.Info("deleted the records of finished workflows", "workflows", n, "older_than", s.after.String())
		}
	}, func(err error) {
		s.logger.Warn("could not claim the retention pass's turn; trying again at the next", "err", err)
	})
}

// TurnName is retention's row in background_turns.
const TurnName = "retention"

// Stop stops the service and waits for a pass in progress. Safe without Start.
func (s *Service) Stop() { s.loop.Stop() }

// Pass sweeps once through every workflow that finished before the cutoff
// and returns how many it deleted.
func (s *Service) Pass(ctx context.Context) (int, error) {
	now := s.now()
	cutoff := now.Add(-s.after)
	if err := s.pruneStripeEvents(ctx, now); err != nil {
		return 0, err
	}
	dctx := dbos.From(s.dctx, ctx)
	deleted, kept := 0, 0
	for {
		began := time.Now()
		list, err := s.db.FinishedWorkflows(ctx, cutoff, kept, page)
		if err != nil {
			return deleted, err
		}
		ids, err := s.deletable(ctx, list)
		if err != nil {
			return deleted, err
		}
		if len(ids) > 0 {
			if err := dbos.DeleteWorkflows(dctx, ids); err != nil {
				return deleted, fmt.Errorf("delete %d workflows: %w", len(ids), err)
			}
			if deleted == 0 { // one record per pass, written once it deleted something
				if err := s.db.RecordRetentionPass(ctx, now, cutoff); err != nil {
					return len(ids), err
				}
			}
			deleted += len(ids)
		}
		kept += len(list) - len(ids)
		if len(list) < page || ctx.Err() != nil {
			return deleted, ctx.Err()
		}
		// A backlog (retention turned on for an old store) is swept at half
		// the database's pace: after each page, a pause as long as the page
		// took, so that checkouts, which queue behind the delete for the one
		// SQLite writer, wait at most one page's delete.
		if err := periodic.Sleep(ctx, time.Since(began)); err != nil {
			return deleted, err
		}
	}
}

// StripeRedelivery is how long Stripe may deliver an event again: it retries
// an unanswered one for up to three days. An applied event's id is kept at
// least this long (and at least RETENTION), then deleted.
const StripeRedelivery = 72 * time.Hour

// pruneStripeEvents deletes the ids of the Stripe events applied before
// max(RETENTION, StripeRedelivery) ago, a page at a time; none with the
// stand-in, which records no events.
func (s *Service) pruneStripeEvents(ctx context.Context, now time.Time) error {
	cutoff := now.Add(-max(s.after, StripeRedelivery))
	var pruned int64
	for {
		n, err := s.db.PruneStripeEvents(ctx, cutoff, page)
		if err != nil {
			return err
		}
		pruned += n
		if n < page || ctx.Err() != nil {
			break
		}
	}
	if pruned > 0 {
		s.logger.Info("deleted the ids of Stripe events past their redelivery", "events", pruned, "received_before", cutoff.UTC().Format(time.RFC3339))
	}
	return ctx.Err()
}

// owner is what a workflow belongs to: an order by id, or a checkout key
// (a checkout's or a refund's).
type owner struct {
	orderID int64
	key     string
}

// ownerOf says which order workflow st belongs to, from its durable name
// and ID; ok is false for a workflow that is not the store's.
func ownerOf(st store.FinishedWorkflow) (o owner, ok bool) {
	id := st.ID
	if st.ForkedFrom != "" { // a fork has an ID of its own and names the original
		id = st.ForkedFrom
	}
	switch st.Name {
	case shop.CheckoutWorkflow:
		return owner{key: id}, true
	case shop.RefundWorkflow:
		pid, found := strings.CutPrefix(id, shop.RefundWorkflowID(""))
		return owner{key: pid}, found
	}
	// dispatch/N, redispatch/N, release/N, cancel/N.
	n, ok := shop.OrderOfWorkflowID(id)
	return owner{orderID: n}, ok
}

// deletable picks, from one page of finished workflows, those the rules in
// the package comment allow to delete.
func (s *Service) deletable(ctx context.Context, list []store.FinishedWorkflow) ([]string, error) {
	owners := make(map[string]owner, len(list))
	var ids []int64
	var keys []string
	for _, st := range list {
		o, ok := ownerOf(st)
		if !ok {
			continue
		}
		owners[st.ID] = o
		if o.key != "" {
			keys = append(keys, o.key)
		} else {
			ids = append(ids, o.orderID)
		}
	}
	if len(owners) == 0 {
		return nil, nil
	}
	settled, err := s.db.SettledOrders(ctx, ids, keys)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, st := range list {
		o, ok := owners[st.ID]
		if !ok {
			continue
		}
		var state store.Settlement
		if o.key != "" {
			state = settled.ByKey[o.key]
		} else {
			state = settled.ByID[o.orderID]
		}
		// A checkout or refund whose key made no order (sold out, or a
		// fork) made nothing to keep; an order id that is not there either
		// (never happens, but is no order to protect) likewise.
		if state == store.Settled || state == store.NoOrder {
			out = append(out, st.ID)
		}
	}
	return out, nil
}
