-- Each product row carries its sorted category ids (JSON text), written in the same transaction
-- as its product_categories links: a product read by id is one primary-key lookup with no join,
-- and a list page needs no second query. product_categories stays the index for filtering by
-- category and what keeps a category in use from being deleted.
ALTER TABLE products ADD COLUMN category_ids TEXT NOT NULL DEFAULT '[]';
UPDATE products
SET category_ids = (
    SELECT json_group_array(category_id)
    FROM (
        SELECT pc.category_id
        FROM product_categories pc
        WHERE pc.product_id = products.id
        ORDER BY pc.category_id
    )
)
WHERE EXISTS (SELECT 1 FROM product_categories pc WHERE pc.product_id = products.id);
