ALTER TABLE products DROP COLUMN category_ids;
