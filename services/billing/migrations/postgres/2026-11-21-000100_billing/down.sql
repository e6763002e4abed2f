DROP TABLE test_gateway_refunds;
DROP TABLE test_gateway_charges;
DROP TABLE events;
DROP TABLE ledger_entries;
DROP TABLE credit_notes;
DROP TABLE refunds;
DROP TABLE payments;
DROP TABLE invoices;
DROP TABLE order_lines;
DROP TABLE orders;
DROP TABLE idempotency_keys;
DROP TABLE carts;
DROP TABLE cart_lines;
DROP TABLE counters;
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN (
        'PENDING', 'PAYMENT_PENDING', 'PAID', 'PAYMENT_FAILED', 'CANCELLED',
        'PARTIALLY_REFUNDED', 'REFUNDED'
    )),
    currency_code TEXT NOT NULL CHECK (length(currency_code) = 3),
    total_minor BIGINT NOT NULL CHECK (total_minor >= 0),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX orders_by_customer ON orders (customer_id, created_at, id);
