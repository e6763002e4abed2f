-- The skeleton's placeholder orders table is replaced by the real one.
DROP TABLE orders;

-- Counters for sequential numbers (invoices, credit notes) and the event feed. Taking a number is
-- an UPDATE of one row, so the row lock orders the transactions that take numbers: events become
-- visible in sequence order, and a reader following the feed never skips one that commits late.
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL CHECK (value >= 0)
);
INSERT INTO counters (name, value) VALUES ('invoice', 0), ('credit_note', 0), ('event', 0);

-- One cart per customer, one line per product.
CREATE TABLE cart_lines (
    customer_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    added_at TIMESTAMP NOT NULL,
    PRIMARY KEY (customer_id, product_id)
);
CREATE TABLE carts (
    customer_id TEXT PRIMARY KEY,
    updated_at TIMESTAMP NOT NULL
);

-- Idempotency keys per caller. The request's fingerprint is stored with its first execution;
-- state RUNNING while it runs (held until locked_until), DONE with the stored answer.
CREATE TABLE idempotency_keys (
    caller_id TEXT NOT NULL,
    request_key TEXT NOT NULL,
    operation TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('RUNNING', 'DONE')),
    order_id TEXT,
    status_code INTEGER,
    response BLOB,
    locked_until TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (caller_id, request_key),
    CHECK ((state = 'DONE') = (status_code IS NOT NULL))
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- Orders. stock_state follows the catalog reservation (id = order id): NONE before the reserve
-- call, HELD, COMMITTED or RELEASED; the recovery worker finishes what a crash left half-way.
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN (
        'PENDING', 'PAYMENT_PENDING', 'PAID', 'PAYMENT_FAILED', 'CANCELLED',
        'PARTIALLY_REFUNDED', 'REFUNDED'
    )),
    status_reason TEXT NOT NULL DEFAULT '',
    currency_code TEXT NOT NULL CHECK (length(currency_code) = 3),
    total_minor BIGINT NOT NULL CHECK (total_minor >= 0),
    refunded_minor BIGINT NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0 AND refunded_minor <= total_minor),
    stock_state TEXT NOT NULL CHECK (stock_state IN ('NONE', 'HELD', 'COMMITTED', 'RELEASED')),
    from_cart BOOLEAN NOT NULL,
    invoice_id TEXT,
    payment_id TEXT,
    locked_until TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    -- A paid order always has committed stock behind it once settled.
    CHECK (status NOT IN ('PAID', 'PARTIALLY_REFUNDED', 'REFUNDED') OR stock_state = 'COMMITTED')
);
CREATE INDEX orders_by_customer ON orders (customer_id, id);
CREATE INDEX orders_by_status ON orders (status, locked_until);

CREATE TABLE order_lines (
    order_id TEXT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    product_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    title TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    unit_price_minor BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    amount_minor BIGINT NOT NULL CHECK (amount_minor = unit_price_minor * quantity),
    PRIMARY KEY (order_id, position)
);

CREATE TABLE invoices (
    id TEXT PRIMARY KEY,
    number TEXT NOT NULL UNIQUE,
    order_id TEXT NOT NULL UNIQUE REFERENCES orders (id),
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('OPEN', 'PAID', 'PARTIALLY_REFUNDED', 'REFUNDED', 'VOID')),
    currency_code TEXT NOT NULL,
    total_minor BIGINT NOT NULL CHECK (total_minor >= 0),
    paid_minor BIGINT NOT NULL DEFAULT 0 CHECK (paid_minor IN (0, total_minor)),
    refunded_minor BIGINT NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0 AND refunded_minor <= paid_minor),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX invoices_by_customer ON invoices (customer_id, id);

-- One charge attempt per order; its id is the idempotency key sent to the gateway.
CREATE TABLE payments (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE REFERENCES orders (id),
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'SUCCEEDED', 'FAILED')),
    currency_code TEXT NOT NULL,
    amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0),
    refunded_minor BIGINT NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor),
    gateway TEXT NOT NULL,
    gateway_payment_id TEXT NOT NULL DEFAULT '',
    -- The customer's payment method token, kept to re-send the charge under the same key.
    method_token TEXT NOT NULL,
    failure_reason TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CHECK (refunded_minor = 0 OR status = 'SUCCEEDED')
);
CREATE INDEX payments_by_status ON payments (status, updated_at);

-- A refund: PENDING is written before the gateway is asked (id = the gateway's idempotency key),
-- so one that a crash interrupts is found and finished; SUCCEEDED carries its credit note.
CREATE TABLE refunds (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (id),
    payment_id TEXT NOT NULL REFERENCES payments (id),
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'SUCCEEDED', 'FAILED')),
    currency_code TEXT NOT NULL,
    amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
    reason TEXT NOT NULL,
    gateway_refund_id TEXT NOT NULL DEFAULT '',
    locked_until TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX refunds_by_status ON refunds (status, locked_until);

CREATE TABLE credit_notes (
    id TEXT PRIMARY KEY,
    number TEXT NOT NULL UNIQUE,
    invoice_id TEXT NOT NULL REFERENCES invoices (id),
    order_id TEXT NOT NULL REFERENCES orders (id),
    payment_id TEXT NOT NULL REFERENCES payments (id),
    refund_id TEXT NOT NULL UNIQUE REFERENCES refunds (id),
    currency_code TEXT NOT NULL,
    amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
    reason TEXT NOT NULL,
    gateway_refund_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX credit_notes_by_invoice ON credit_notes (invoice_id, id);

-- Double-entry ledger: signed amounts (debit > 0), each transaction sums to zero.
CREATE TABLE ledger_entries (
    id TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    account TEXT NOT NULL CHECK (account IN ('CUSTOMER', 'GATEWAY_CLEARING', 'REVENUE', 'REFUNDS')),
    customer_id TEXT NOT NULL,
    currency_code TEXT NOT NULL,
    amount_minor BIGINT NOT NULL CHECK (amount_minor <> 0),
    order_id TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    credit_note_id TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    CHECK ((account = 'CUSTOMER') = (customer_id <> ''))
);
CREATE INDEX ledger_by_order ON ledger_entries (order_id, id);
CREATE INDEX ledger_by_account ON ledger_entries (account, customer_id, id);
CREATE INDEX ledger_by_transaction ON ledger_entries (transaction_id);

-- The outbox: every state change appends here in its own transaction.
CREATE TABLE events (
    sequence BIGINT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX events_by_subject ON events (subject_id, sequence);

-- The built-in test gateway's own books (a stand-in for the provider's side; it never shares a
-- transaction with billing's tables).
CREATE TABLE test_gateway_charges (
    idempotency_key TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    outcome TEXT NOT NULL CHECK (outcome IN ('SUCCEEDED', 'DECLINED', 'PROCESSING_ERROR')),
    currency_code TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    refunded_minor BIGINT NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor),
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE test_gateway_refunds (
    idempotency_key TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    charge_id TEXT NOT NULL REFERENCES test_gateway_charges (id),
    amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
    created_at TIMESTAMP NOT NULL
);
