-- Product details kept as JSON text (both backends read them whole), and the lower-cased title
-- and description the text search matches against (lower-cased in Rust, so Unicode case folding
-- is the same on both backends).
ALTER TABLE products ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
ALTER TABLE products ADD COLUMN image_urls TEXT NOT NULL DEFAULT '[]';
ALTER TABLE products ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
-- Keyset orders: every ORDER BY of ListProducts has an index ending in id.
CREATE INDEX products_by_created ON products (created_at, id);
CREATE INDEX products_by_price ON products (currency_code, price_minor, id);
CREATE INDEX products_by_title ON products (title, id);
CREATE INDEX products_by_status_created ON products (status, created_at, id);

-- The category tree. A category in use by products or children cannot be deleted (RESTRICT).
CREATE TABLE categories (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    parent_id TEXT REFERENCES categories (id) ON DELETE RESTRICT,
    version BIGINT NOT NULL DEFAULT 1,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CHECK (parent_id IS NULL OR parent_id <> id)
);
CREATE INDEX categories_by_parent ON categories (parent_id, slug);

CREATE TABLE product_categories (
    product_id TEXT NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    category_id TEXT NOT NULL REFERENCES categories (id) ON DELETE RESTRICT,
    PRIMARY KEY (product_id, category_id)
);
CREATE INDEX product_categories_by_category ON product_categories (category_id, product_id);

-- Stock per product. The database itself refuses overselling: on_hand >= reserved >= 0.
CREATE TABLE stock (
    product_id TEXT PRIMARY KEY REFERENCES products (id) ON DELETE CASCADE,
    on_hand BIGINT NOT NULL DEFAULT 0,
    reserved BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMP,
    CHECK (reserved >= 0),
    CHECK (on_hand >= reserved)
);

-- Every change of on-hand stock.
CREATE TABLE stock_movements (
    id TEXT PRIMARY KEY,
    product_id TEXT NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('ADJUSTMENT', 'RESERVATION_COMMIT')),
    delta BIGINT NOT NULL CHECK (delta <> 0),
    on_hand_after BIGINT NOT NULL CHECK (on_hand_after >= 0),
    reason TEXT NOT NULL,
    reservation_id TEXT,
    actor_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX stock_movements_by_product ON stock_movements (product_id, id);

-- AdjustStock idempotency keys, per caller.
CREATE TABLE stock_adjustment_requests (
    actor_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    movement_id TEXT NOT NULL REFERENCES stock_movements (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (actor_id, request_id)
);

-- Reservations leave HELD at most once: every transition is a conditional update on state.
CREATE TABLE reservations (
    id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('HELD', 'COMMITTED', 'RELEASED', 'EXPIRED')),
    owner_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    CHECK ((state = 'HELD') = (finished_at IS NULL))
);
CREATE INDEX reservations_by_expiry ON reservations (state, expires_at);

CREATE TABLE reservation_items (
    reservation_id TEXT NOT NULL REFERENCES reservations (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    product_id TEXT NOT NULL REFERENCES products (id),
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, product_id)
);
