-- The store's own tables. They live beside DBOS's: in SQLite the same file,
-- in Postgres the default schema (DBOS keeps its tables in schema "dbos").
-- Runs at every start, so every statement is idempotent. AUTO_ID becomes the
-- dialect's auto-numbered primary key (see dialect.autoID).

CREATE TABLE IF NOT EXISTS products (
    product_id  INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    -- The CHECK is the last line of defence against overselling: a reserve
    -- that would go below zero fails instead of committing.
    inventory   INTEGER NOT NULL CHECK (inventory >= 0)
);

INSERT INTO products (product_id, name, description, price_cents, inventory)
VALUES (1, 'Premium Quality Widget', 'Enhance your productivity with our top-rated widgets!', 9999, 100)
ON CONFLICT (product_id) DO NOTHING;

-- One row per checkout that got a unit of stock. checkout_key is the
-- client's idempotency key, which is also the checkout workflow's ID and the
-- payment id, so a key can never make two orders.
-- order_status: 0 PENDING, 1 DISPATCHED, 2 PAID, -1 CANCELLED.
-- Times are Unix milliseconds.
CREATE TABLE IF NOT EXISTS orders (
    order_id           AUTO_ID,
    checkout_key       TEXT    NOT NULL UNIQUE,
    shopper            TEXT    NOT NULL DEFAULT '',
    product_id         INTEGER NOT NULL REFERENCES products (product_id),
    price_cents        INTEGER NOT NULL,
    order_status       INTEGER NOT NULL DEFAULT 0 CHECK (order_status IN (-1, 0, 1, 2)),
    progress_remaining INTEGER NOT NULL DEFAULT 10 CHECK (progress_remaining BETWEEN 0 AND 10),
    created_at         BIGINT  NOT NULL,
    last_update_time   BIGINT  NOT NULL
);

CREATE INDEX IF NOT EXISTS orders_shopper ON orders (shopper, order_id);

-- The few orders not final yet (PENDING 0, PAID 2), for the reconciler
-- (internal/reconcile), which reads them every few seconds.
CREATE INDEX IF NOT EXISTS orders_unfinished ON orders (order_id) WHERE order_status IN (0, 2);

-- Where a checkout came from, for the hold limit of a store open to the
-- public (HOLD_LIMIT, internal/web/limits.go): the client's address as the
-- store saw it (TRUSTED_PROXIES says whose X-Forwarded-For to believe).
-- Written by the checkout's first step in the transaction that creates the
-- order, only when the limit is on (ADMIN_TOKEN set); a demo store writes
-- none. A table of its own for the reason refunds has one (no ADD COLUMN IF
-- NOT EXISTS in SQLite). The limit counts a client's orders created within
-- the payment window that are still PENDING.
-- The key leads with the client: the one read is by client and time, and an
-- index that starts elsewhere could only be read whole.
CREATE TABLE IF NOT EXISTS hold_clients (
    client     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    order_id   BIGINT NOT NULL,
    PRIMARY KEY (client, created_at, order_id)
);

-- A checkout that found the shelf empty: it made no order, and this row is
-- what tells a retried checkout (and its payment page) "sold out". It is
-- written in the transaction that found no stock, with that step's checkpoint.
CREATE TABLE IF NOT EXISTS sold_out_checkouts (
    checkout_key TEXT   PRIMARY KEY,
    at           BIGINT NOT NULL
);

-- A payment that arrived for an order already cancelled (declined first, or
-- after the payment window closed). The money was taken but no widget will
-- ship: each row is a refund to make. payment_id is unique so a retried
-- webhook records it once.
CREATE TABLE IF NOT EXISTS late_payments (
    payment_id  TEXT   PRIMARY KEY,
    order_id    BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);

-- GET /late_payments pages through the rows in this order (received_at, then
-- payment_id, which makes each position unique): one index range per page.
CREATE INDEX IF NOT EXISTS late_payments_received ON late_payments (received_at, payment_id);

-- A late payment paid back: written by the refund workflow's last step (in
-- one transaction with its checkpoint) once the provider confirmed the refund.
-- A table of its own rather than a column of late_payments: the schema runs
-- at every start, and CREATE TABLE IF NOT EXISTS is idempotent on both
-- databases where SQLite has no ADD COLUMN IF NOT EXISTS. A late payment with
-- no row here is a refund still pending.
CREATE TABLE IF NOT EXISTS refunds (
    payment_id         TEXT   PRIMARY KEY,
    provider_refund_id TEXT   NOT NULL,
    refunded_at        BIGINT NOT NULL
);

-- The stand-in payment provider's own record of the refunds it made
-- (POST /provider/refunds/{payment_id}): one per Idempotency-Key, so a
-- request repeated with the same key refunds nothing more. A real deployment
-- points PROVIDER_URL at the real provider and never writes this table.
CREATE TABLE IF NOT EXISTS provider_refunds (
    idempotency_key TEXT   PRIMARY KEY,
    refund_id       TEXT   NOT NULL,
    payment_id      TEXT   NOT NULL,
    amount_cents    BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);

-- One row per store instance (DBOS executor) that ever ran on this database,
-- for dead-instance takeover (Postgres only; see takeover.go). heartbeat_at
-- is the database's clock in Unix ms, refreshed every couple of seconds.
-- taken_over_by is the live instance that resumed this one's workflows after
-- it went silent; the instance clears it when it comes back.
CREATE TABLE IF NOT EXISTS instances (
    executor_id   TEXT   PRIMARY KEY,
    heartbeat_at  BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    taken_over_by TEXT,
    taken_over_at BIGINT
);

-- One row per start of a store process (a "run"), written at startup outside
-- any workflow. DBOS records when each step started and completed, and which
-- executor owns a workflow, but not which process run executed a step: the
-- workflow timeline labels each step with the run of the workflow's executor
-- whose lifetime contains the step's completion time (see timeline.go).
CREATE TABLE IF NOT EXISTS process_runs (
    run_id      AUTO_ID,
    executor_id TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  BIGINT  NOT NULL
);

CREATE INDEX IF NOT EXISTS process_runs_executor ON process_runs (executor_id, started_at);

-- One row per retention pass that deleted DBOS records (internal/retention):
-- when it ran and its cutoff (it deleted the finished workflows of settled
-- orders last updated before it). The timeline reads it to tell "deleted by
-- retention on …" from "not in DBOS's records". Times are Unix ms.
CREATE TABLE IF NOT EXISTS retention_passes (
    ran_at BIGINT NOT NULL,
    cutoff BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS retention_passes_cutoff ON retention_passes (cutoff);

-- One row per background pass that runs once per interval across every
-- instance (internal/periodic.Turns): when its last turn was taken (Unix ms,
-- by the database's clock) and by which instance.
CREATE TABLE IF NOT EXISTS background_turns (
    pass     TEXT   PRIMARY KEY,
    taken_at BIGINT NOT NULL,
    holder   TEXT   NOT NULL
);

-- The catalog beyond product 1 (the reference store's widget, above): seeded
-- once, never overwritten (an operator's restock or price change stands).
INSERT INTO products (product_id, name, description, price_cents, inventory) VALUES
    (2, 'Pocket Widget', 'All the quality of the Premium, sized for your pocket.', 4999, 50),
    (3, 'Widget Pro Max', 'Twice the widget, for the professional who has everything.', 24999, 10),
    (4, 'Widget Care Kit', 'Cloth, brush and polish to keep any widget shining.', 1299, 200)
ON CONFLICT (product_id) DO NOTHING;

-- Each product's picture: a path under /static (views/static/products),
-- served by the store itself (no network). A table of its own for the reason
-- refunds has one (no ADD COLUMN IF NOT EXISTS in SQLite).
CREATE TABLE IF NOT EXISTS product_pictures (
    product_id INTEGER PRIMARY KEY REFERENCES products (product_id),
    picture    TEXT    NOT NULL
);

INSERT INTO product_pictures (product_id, picture) VALUES
    (1, '/static/products/premium.svg'),
    (2, '/static/products/pocket.svg'),
    (3, '/static/products/promax.svg'),
    (4, '/static/products/carekit.svg')
ON CONFLICT (product_id) DO NOTHING;

-- The lines of an order: what it holds, and the unit price at the moment of
-- the hold (a later price change never changes a placed order). Written with
-- the order by the checkout's first step; orders.price_cents is their total.
-- Orders made before carts have no lines: they are one unit of
-- orders.product_id at orders.price_cents.
CREATE TABLE IF NOT EXISTS order_lines (
    order_id         BIGINT  NOT NULL,
    product_id       INTEGER NOT NULL REFERENCES products (product_id),
    quantity         INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 10),
    unit_price_cents INTEGER NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, product_id)
);

-- The cart of a checkout that found a line short (written with its row in
-- sold_out_checkouts): every line asked for, and the stock the checkout found
-- (available < quantity: the line was short). It names the short lines in the
-- answer, and tells a replay of the key with another cart.
CREATE TABLE IF NOT EXISTS sold_out_lines (
    checkout_key TEXT    NOT NULL,
    product_id   INTEGER NOT NULL,
    quantity     INTEGER NOT NULL,
    available    INTEGER NOT NULL,
    PRIMARY KEY (checkout_key, product_id)
);

-- Payments at a provider that is asked (PAYMENT_PROVIDER=stripe; the
-- stand-in writes none of these, its payment page being the store's own
-- /pay/{key}). Tables of their own for the reason refunds has one (no ADD
-- COLUMN IF NOT EXISTS in SQLite): an existing database gets them at its
-- next start.
--
-- The payment of a checkout at the provider (Stripe: its Checkout Session):
-- where the buyer pays. Written by the checkout's payment-record step, in one
-- transaction with that step's checkpoint, right after the payment-create
-- step asked the provider (with an idempotency key per checkout). Keyed by
-- the checkout key, never by the session id, which the store does not
-- assume unique.
CREATE TABLE IF NOT EXISTS payment_sessions (
    checkout_key TEXT   PRIMARY KEY,
    order_id     BIGINT NOT NULL,
    session_id   TEXT   NOT NULL,
    pay_url      TEXT   NOT NULL,
    created_at   BIGINT NOT NULL
);

-- The money taken for a checkout (Stripe: its PaymentIntent), from the first
-- event that said it was paid (event_id), written before that payment is
-- applied: the refund of a late payment, or an operator's cancel-and-refund
-- of a paid order, refunds it.
CREATE TABLE IF NOT EXISTS payment_intents (
    checkout_key   TEXT   PRIMARY KEY,
    payment_intent TEXT   NOT NULL,
    event_id       TEXT   NOT NULL,
    received_at    BIGINT NOT NULL
);

-- Every Stripe event applied (POST /webhooks/stripe), written once the
-- event's effect has committed: an event id seen here changes nothing again.
-- (A crash between the effect and this row makes a redelivery apply it
-- again, which changes nothing either: a payment status is delivered once
-- per checkout, a late payment recorded once.) checkout_key is "" for an
-- event that names no checkout of this store.
CREATE TABLE IF NOT EXISTS stripe_events (
    event_id     TEXT   PRIMARY KEY,
    event_type   TEXT   NOT NULL,
    checkout_key TEXT   NOT NULL,
    received_at  BIGINT NOT NULL
);
-- Retention (RETENTION) deletes the events received more than
-- max(RETENTION, 3 days) ago, oldest first: Stripe redelivers an event for
-- at most three days, and an id is kept only to recognise a redelivery.
CREATE INDEX IF NOT EXISTS stripe_events_received_at ON stripe_events (received_at);

-- A payment status the webhook could not settle its order by (it came after
-- the payment window, or while the checkout was not alive in DBOS): the
-- checkout decides by it when it settles the order (its settle step reads the
-- order with this row). The first status per checkout is the one that counts
-- (ON CONFLICT DO NOTHING). A payment inside the window settles the order row
-- itself and writes nothing here (internal/paywait, Deliver). A table of its
-- own, not a column of orders, for the reason refunds has one.
CREATE TABLE IF NOT EXISTS payments_received (
    checkout_key   TEXT   PRIMARY KEY,
    payment_status TEXT   NOT NULL,
    received_at    BIGINT NOT NULL
);
