-- The leanest checkout this product's guarantees allow, as SQL alone: pgbench runs it against
-- billing's and catalog's real schemas (their migrations, in schemas `billing` and `catalog` of
-- one database) with no service in the way. Each step is one statement in its own transaction,
-- the fewest round trips and commits that keep the guarantees:
-- 1. add to cart: the line upserted and its idempotency key stored with its answer;
-- then checkout reads the cart;
-- 2. catalog holds the stock (the price snapshot comes back with it);
-- 3. billing commits the key, the order PAYMENT_PENDING, its line, the payment and the numbered
--    invoice, with their events, before the gateway is asked (so a crash can be recovered);
-- 4. catalog commits the reservation (stock taken, the movement recorded);
-- 5. billing records the payment: order, payment, invoice, ledger, cart, the key's answer, events.
-- Left out, so this is a ceiling and not a measure of our code: the catalog read that checks the
-- product at add-to-cart, numbering the events, and the test gateway's own book.
-- pgbench counts one run of this script as one transaction: tps is checkouts per second.
\set n random(1, 1000000000000000)
-- 1. Add to cart: the cart touched, the line upserted, the key stored DONE with its answer, the cart read back.
WITH ids AS (SELECT 'c' || :client_id::int AS c, 'p' || (:client_id::int + 1) AS p),
cart AS (INSERT INTO billing.carts (customer_id, updated_at) SELECT c, now() FROM ids
         ON CONFLICT (customer_id) DO UPDATE SET updated_at = excluded.updated_at RETURNING 1),
line AS (INSERT INTO billing.cart_lines (customer_id, product_id, quantity, added_at) SELECT c, p, 1, now() FROM ids
         ON CONFLICT (customer_id, product_id) DO UPDATE SET quantity = cart_lines.quantity + excluded.quantity
         RETURNING product_id, quantity),
k AS (INSERT INTO billing.idempotency_keys (caller_id, request_key, operation, fingerprint, state, status_code, response, locked_until, created_at)
      SELECT c, 'a' || :n::bigint, 'cart', repeat('f', 64), 'DONE', 0, decode(repeat('ab', 120), 'hex'), now(), now() FROM ids RETURNING 1)
SELECT l.product_id, l.quantity, (SELECT count(*) FROM cart) + (SELECT count(*) FROM k) AS written FROM line l;
-- Checkout reads the cart.
SELECT product_id, quantity FROM billing.cart_lines WHERE customer_id = 'c' || :client_id::int ORDER BY added_at, product_id;
-- 2. Reserve (catalog): reservation, stock held, its item; the price snapshot comes back with it.
WITH ids AS (SELECT 'o' || :client_id::int || '-' || :n::bigint AS o, 'c' || :client_id::int AS c, 'p' || (:client_id::int + 1) AS p),
r AS (INSERT INTO catalog.reservations (id, fingerprint, state, owner_id, created_at, expires_at)
      SELECT o, repeat('f', 64), 'HELD', 'billing', now(), now() + interval '15 minutes' FROM ids RETURNING id),
s AS (UPDATE catalog.stock SET reserved = reserved + 1, updated_at = now() FROM ids
      WHERE product_id = ids.p AND on_hand - reserved >= 1 RETURNING stock.product_id),
i AS (INSERT INTO catalog.reservation_items (reservation_id, position, product_id, quantity)
      SELECT r.id, 0, s.product_id, 1 FROM r, s RETURNING 1)
SELECT p.id, p.sku, p.title, p.price_minor, p.currency_code, (SELECT count(*) FROM i) FROM catalog.products p JOIN s ON p.id = s.product_id;
-- 3. Payment pending (billing): key claimed with its order, order, line, payment, numbered invoice, events.
WITH ids AS (SELECT 'o' || :client_id::int || '-' || :n::bigint AS o, 'c' || :client_id::int AS c, 'p' || (:client_id::int + 1) AS p),
k AS (INSERT INTO billing.idempotency_keys (caller_id, request_key, operation, fingerprint, state, order_id, locked_until, created_at)
      SELECT c, 'b' || :n::bigint, 'checkout', repeat('f', 64), 'RUNNING', o, now() + interval '1 minute', now() FROM ids RETURNING 1),
o AS (INSERT INTO billing.orders (id, customer_id, status, currency_code, total_minor, stock_state, from_cart, invoice_id, payment_id, locked_until, created_at, updated_at)
      SELECT o, c, 'PAYMENT_PENDING', 'EUR', 1999, 'HELD', true, 'i' || o, 'y' || o, now() + interval '1 minute', now(), now() FROM ids RETURNING id),
l AS (INSERT INTO billing.order_lines (order_id, position, product_id, sku, title, quantity, unit_price_minor, amount_minor)
      SELECT o.id, 0, ids.p, 'sku', 'Product', 1, 1999, 1999 FROM o, ids RETURNING 1),
y AS (INSERT INTO billing.payments (id, order_id, status, currency_code, amount_minor, gateway, method_token, created_at, updated_at)
      SELECT 'y' || o.id, o.id, 'PENDING', 'EUR', 1999, 'test', 'tok_visa', now(), now() FROM o RETURNING 1),
e AS (INSERT INTO billing.events (id, event_type, subject_id, payload, trace_id, created_at)
      SELECT ids.o || '-' || t, t, ids.o, repeat('x', 300), repeat('0', 32), now() FROM ids,
             unnest(ARRAY['order.created', 'invoice.created', 'payment.created', 'order.payment_pending']) t RETURNING 1),
n AS (UPDATE billing.counters SET value = value + 1 WHERE name = 'invoice' RETURNING value),
v AS (INSERT INTO billing.invoices (id, number, order_id, customer_id, status, currency_code, total_minor, created_at, updated_at)
      SELECT 'i' || o.id, 'INV-' || n.value, o.id, ids.c, 'OPEN', 'EUR', 1999, now(), now() FROM o, n, ids RETURNING number)
SELECT number, (SELECT count(*) FROM k) + (SELECT count(*) FROM l) + (SELECT count(*) FROM y) + (SELECT count(*) FROM e) FROM v;
-- 4. Commit the reservation (catalog): state, stock taken, the movement.
WITH ids AS (SELECT 'o' || :client_id::int || '-' || :n::bigint AS o),
r AS (UPDATE catalog.reservations SET state = 'COMMITTED', finished_at = now() FROM ids WHERE id = ids.o AND state = 'HELD' RETURNING id),
s AS (UPDATE catalog.stock SET on_hand = on_hand - ri.quantity, reserved = reserved - ri.quantity, updated_at = now()
      FROM catalog.reservation_items ri, r WHERE ri.reservation_id = r.id AND stock.product_id = ri.product_id
      RETURNING stock.product_id, ri.quantity, stock.on_hand, r.id)
INSERT INTO catalog.stock_movements (id, product_id, kind, delta, on_hand_after, reason, reservation_id, actor_id, created_at)
SELECT 'm' || s.id, s.product_id, 'RESERVATION_COMMIT', -s.quantity, s.on_hand, 'checkout', s.id, 'billing', now() FROM s;
-- 5. Paid (billing): order, payment, invoice, ledger, cart line bought, the key's answer, events.
WITH ids AS (SELECT 'o' || :client_id::int || '-' || :n::bigint AS o, 'c' || :client_id::int AS c, 'p' || (:client_id::int + 1) AS p),
o AS (UPDATE billing.orders SET status = 'PAID', stock_state = 'COMMITTED', locked_until = now(), updated_at = now() FROM ids
      WHERE id = ids.o AND status = 'PAYMENT_PENDING' RETURNING id),
y AS (UPDATE billing.payments SET status = 'SUCCEEDED', gateway_payment_id = 'ch_' || ids.o, updated_at = now() FROM ids
      WHERE id = 'y' || ids.o AND status = 'PENDING' RETURNING 1),
v AS (UPDATE billing.invoices SET status = 'PAID', paid_minor = total_minor, updated_at = now() FROM ids WHERE id = 'i' || ids.o RETURNING 1),
g AS (INSERT INTO billing.ledger_entries (id, transaction_id, account, customer_id, currency_code, amount_minor, order_id, payment_id, description, created_at)
      SELECT ids.o || '-' || a.n, 't' || ids.o, a.account, CASE WHEN a.account = 'CUSTOMER' THEN ids.c ELSE '' END, 'EUR', a.amount, ids.o, 'y' || ids.o, 'charge', now()
      FROM ids, (VALUES (1, 'CUSTOMER', 1999), (2, 'REVENUE', -1999), (3, 'GATEWAY_CLEARING', 1999), (4, 'CUSTOMER', -1999)) a(n, account, amount) RETURNING 1),
d AS (DELETE FROM billing.cart_lines USING ids WHERE customer_id = ids.c AND product_id = ids.p RETURNING 1),
c AS (UPDATE billing.carts SET updated_at = now() FROM ids WHERE customer_id = ids.c RETURNING 1),
k AS (UPDATE billing.idempotency_keys SET state = 'DONE', status_code = 0, response = decode(repeat('ab', 250), 'hex') FROM ids
      WHERE caller_id = ids.c AND request_key = 'b' || :n::bigint RETURNING 1),
e AS (INSERT INTO billing.events (id, event_type, subject_id, payload, trace_id, created_at)
      SELECT ids.o || '-' || t, t, ids.o, repeat('x', 300), repeat('0', 32), now() FROM ids,
             unnest(ARRAY['payment.succeeded', 'invoice.paid', 'order.paid']) t RETURNING 1)
SELECT (SELECT count(*) FROM o) + (SELECT count(*) FROM y) + (SELECT count(*) FROM v) + (SELECT count(*) FROM g)
     + (SELECT count(*) FROM d) + (SELECT count(*) FROM c) + (SELECT count(*) FROM k) + (SELECT count(*) FROM e) AS written;
