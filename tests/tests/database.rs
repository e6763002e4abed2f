//! The kit's database layer on both backends: one Diesel body through `db_run!` writes and reads
//! rows of a service schema in its portable types, and the database enforces its constraints.

#![allow(
    clippy::expect_used,
    reason = "end-to-end tests: a failed expectation is a failed test, with its message"
)]

use std::time::Duration;

use backbone_catalog::db::schema::products;
use backbone_common::{
    config::DatabaseArgs,
    db::{Database, DbConn},
    db_run,
};
use backbone_tests::{Backend, TestDb, on_both_backends};
use diesel::{ExpressionMethods as _, QueryDsl as _};
use diesel_async::{RunQueryDsl as _, SimpleAsyncConnection as _};

/// The catalog's database on `db`, migrated, and a connection to it.
async fn migrated_catalog(db: &TestDb) -> (Database, DbConn) {
    migrated(db, backbone_catalog::MIGRATIONS).await
}

/// Billing's events by id: (id, sequence).
async fn numbered_events(conn: &mut DbConn) -> Vec<(String, Option<i64>)> {
    use backbone_billing::db::schema::events::dsl as e;
    db_run!(conn, |c| {
        e::events
            .order(e::id)
            .select((e::id, e::sequence))
            .load::<(String, Option<i64>)>(c)
            .await
    })
    .expect("select")
}

/// A catalog product row for an insert.
#[derive(diesel::Insertable)]
#[diesel(table_name = products)]
struct NewProduct {
    id: String,
    sku: String,
    title: String,
    price_minor: i64,
    currency_code: &'static str,
    status: &'static str,
    created_at: chrono::NaiveDateTime,
    updated_at: chrono::NaiveDateTime,
}

/// Catalog product `n` with `sku`, priced 1.00 EUR.
fn product(n: u32, sku: &str) -> NewProduct {
    let now = chrono::Utc::now().naive_utc();
    NewProduct {
        id: format!("0193a5b0-0000-7000-8000-00000000000{n}"),
        sku: sku.to_owned(),
        title: format!("Product {n}"),
        price_minor: 100,
        currency_code: "EUR",
        status: "ACTIVE",
        created_at: now,
        updated_at: now,
    }
}

/// A service's database on `db`, migrated, and a connection to it.
async fn migrated(db: &TestDb, migrations: backbone_common::db::Migrations) -> (Database, DbConn) {
    let args = DatabaseArgs {
        db_pool_size: 4,
        db_timeout: Duration::from_secs(5),
        db_read_connections: 2,
    };
    let database = Database::new(&db.url, &args, migrations).expect("database");
    database.migrate().await.expect("migrate");
    // `conn()` waits for readiness, which the monitor sets; here we migrated by hand.
    tokio::spawn(database.clone().monitor());
    let mut ready = database.readiness();
    tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
        .await
        .expect("ready")
        .expect("watch");
    let conn = database.conn().await.expect("conn");
    (database, conn)
}

on_both_backends! {
    async fn one_query_body_runs_on_either_backend(backend: Backend) {
        use backbone_catalog::db::schema::products::dsl as p;
        let db = TestDb::new(backend).await;
        let (_database, mut conn) = migrated_catalog(&db).await;

        let now = chrono::Utc::now().naive_utc();
        let inserted = db_run!(&mut conn, |c| {
            diesel::insert_into(p::products)
                .values((
                    p::id.eq("0193a5b0-0000-7000-8000-000000000001"),
                    p::sku.eq("SKU-1"),
                    p::title.eq("Mug"),
                    p::price_minor.eq(1250_i64),
                    p::currency_code.eq("EUR"),
                    p::status.eq("ACTIVE"),
                    p::created_at.eq(now),
                    p::updated_at.eq(now),
                ))
                .execute(c)
                .await
        })
        .expect("insert");
        assert_eq!(inserted, 1);

        let (title, price, created): (String, i64, chrono::NaiveDateTime) = db_run!(&mut conn, |c| {
            p::products
                .filter(p::sku.eq("SKU-1"))
                .select((p::title, p::price_minor, p::created_at))
                .first(c)
                .await
        })
        .expect("select");
        assert_eq!((title.as_str(), price), ("Mug", 1250));
        assert_eq!(created.and_utc().timestamp_micros(), now.and_utc().timestamp_micros());

        // The database itself refuses what the schema forbids: a duplicate SKU, a negative price.
        let duplicate = db_run!(&mut conn, |c| {
            diesel::insert_into(p::products)
                .values((
                    p::id.eq("0193a5b0-0000-7000-8000-000000000002"),
                    p::sku.eq("SKU-1"),
                    p::title.eq("Other"),
                    p::price_minor.eq(1_i64),
                    p::currency_code.eq("EUR"),
                    p::status.eq("ACTIVE"),
                    p::created_at.eq(now),
                    p::updated_at.eq(now),
                ))
                .execute(c)
                .await
        });
        assert!(matches!(
            duplicate,
            Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _))
        ), "{duplicate:?}");
        let negative = db_run!(&mut conn, |c| {
            diesel::update(p::products).set(p::price_minor.eq(-1_i64)).execute(c).await
        });
        assert!(negative.is_err(), "negative price accepted");
    }
}

on_both_backends! {
    async fn the_category_ids_migration_fills_in_existing_products(backend: Backend) {
        let db = TestDb::new(backend).await;
        let (_database, mut conn) = migrated_catalog(&db).await;
        // Rows as a database of the release before this migration holds them: links only.
        let (down, up) = match backend {
            Backend::Postgres => (
                include_str!("../../services/catalog/migrations/postgres/2026-11-21-000200_product_category_ids/down.sql"),
                include_str!("../../services/catalog/migrations/postgres/2026-11-21-000200_product_category_ids/up.sql"),
            ),
            Backend::Sqlite => (
                include_str!("../../services/catalog/migrations/sqlite/2026-11-21-000200_product_category_ids/down.sql"),
                include_str!("../../services/catalog/migrations/sqlite/2026-11-21-000200_product_category_ids/up.sql"),
            ),
        };
        let rows = "INSERT INTO categories (id, slug, name, created_at, updated_at) VALUES \
                ('cat-b', 'b', 'B', '2026-01-01 00:00:00', '2026-01-01 00:00:00'), \
                ('cat-a', 'a', 'A', '2026-01-01 00:00:00', '2026-01-01 00:00:00'); \
            INSERT INTO products (id, sku, title, price_minor, currency_code, status, created_at, updated_at) VALUES \
                ('prod-1', 'SKU-1', 'Mug', 100, 'EUR', 'ACTIVE', '2026-01-01 00:00:00', '2026-01-01 00:00:00'), \
                ('prod-2', 'SKU-2', 'Cup', 100, 'EUR', 'ACTIVE', '2026-01-01 00:00:00', '2026-01-01 00:00:00'); \
            INSERT INTO product_categories (product_id, category_id) VALUES ('prod-1', 'cat-b'), ('prod-1', 'cat-a');";
        db_run!(&mut conn, |c| c.batch_execute(down).await).expect("down");
        db_run!(&mut conn, |c| c.batch_execute(rows).await).expect("rows");
        db_run!(&mut conn, |c| c.batch_execute(up).await).expect("up");

        use backbone_catalog::db::schema::products::dsl as p;
        let stored: Vec<(String, String)> = db_run!(&mut conn, |c| {
            p::products.order(p::id).select((p::id, p::category_ids)).load(c).await
        })
        .expect("select");
        let parsed: Vec<(String, Vec<String>)> = stored
            .into_iter()
            .map(|(id, json)| (id, serde_json::from_str(&json).expect("a JSON array")))
            .collect();
        assert_eq!(
            parsed,
            [
                ("prod-1".to_owned(), vec!["cat-a".to_owned(), "cat-b".to_owned()]),
                ("prod-2".to_owned(), vec![]),
            ]
        );
    }
}

on_both_backends! {
    async fn billing_events_keep_their_numbers_and_new_ones_are_numbered_after_commit(backend: Backend) {
        let db = TestDb::new(backend).await;
        let (_database, mut conn) = migrated(&db, backbone_billing::MIGRATIONS).await;
        // Events as a database of the release before event numbering holds them: numbered as
        // they were written, the counter at the last number.
        let (down, up) = match backend {
            Backend::Postgres => (
                include_str!("../../services/billing/migrations/postgres/2026-11-21-000200_event_numbering/down.sql"),
                include_str!("../../services/billing/migrations/postgres/2026-11-21-000200_event_numbering/up.sql"),
            ),
            Backend::Sqlite => (
                include_str!("../../services/billing/migrations/sqlite/2026-11-21-000200_event_numbering/down.sql"),
                include_str!("../../services/billing/migrations/sqlite/2026-11-21-000200_event_numbering/up.sql"),
            ),
        };
        let rows = "INSERT INTO events (sequence, id, event_type, subject_id, payload, trace_id, created_at) VALUES \
                (1, 'ev-b', 'order.created', 'o-1', '{}', '', '2026-01-01 00:00:00'), \
                (2, 'ev-a', 'order.paid', 'o-1', '{}', '', '2026-01-01 00:00:01'); \
            UPDATE counters SET value = 2 WHERE name = 'event';";
        db_run!(&mut conn, |c| c.batch_execute(down).await).expect("down");
        db_run!(&mut conn, |c| c.batch_execute(rows).await).expect("rows");
        db_run!(&mut conn, |c| c.batch_execute(up).await).expect("up");

        use backbone_billing::db::feed;
        let some = |id: &str, n: Option<i64>| (id.to_owned(), n);
        assert_eq!(numbered_events(&mut conn).await, [some("ev-a", Some(2)), some("ev-b", Some(1))]);
        assert!(!feed::unnumbered(&mut conn).await.expect("look"));

        // Appended without a number, as a unit of work does; numbered oldest id first, after
        // the last number, and only once.
        let appended = "INSERT INTO events (id, event_type, subject_id, payload, trace_id, created_at) VALUES \
            ('ev-d', 'order.paid', 'o-2', '{}', '', '2026-01-01 00:00:03'), \
            ('ev-c', 'order.created', 'o-2', '{}', '', '2026-01-01 00:00:02');";
        db_run!(&mut conn, |c| c.batch_execute(appended).await).expect("append");
        assert!(feed::unnumbered(&mut conn).await.expect("look"));
        assert_eq!(feed::number(&mut conn, 1).await.expect("number one"), 1);
        assert_eq!(feed::number_all(&mut conn).await.expect("number the rest"), 1);
        assert_eq!(feed::number_all(&mut conn).await.expect("nothing left"), 0);
        assert_eq!(
            numbered_events(&mut conn).await,
            [some("ev-a", Some(2)), some("ev-b", Some(1)), some("ev-c", Some(3)), some("ev-d", Some(4))]
        );

        // Down again: every event keeps its number, and the counter follows.
        db_run!(&mut conn, |c| c.batch_execute("INSERT INTO events (id, event_type, subject_id, payload, trace_id, created_at) VALUES ('ev-e', 'order.created', 'o-3', '{}', '', '2026-01-01 00:00:04')").await).expect("append");
        db_run!(&mut conn, |c| c.batch_execute(down).await).expect("down again");
        let counter: i64 = {
            use backbone_billing::db::schema::counters::dsl as k;
            db_run!(&mut conn, |c| k::counters.find("event").select(k::value).first(c).await).expect("counter")
        };
        assert_eq!(counter, 5);
    }
}

on_both_backends! {
    async fn prepared_writes_keep_one_statement_per_shape_and_bind_each_call_s_values(backend: Backend) {
        use backbone_catalog::db::schema::products::dsl as p;
        use backbone_common::db::Prepared as _;
        use diesel::sql_types::{BigInt, Text};
        let db = TestDb::new(backend).await;
        let (_database, mut conn) = migrated_catalog(&db).await;
        let products = "INSERT INTO products (id, sku, title, price_minor, currency_code, status, created_at, updated_at) VALUES \
            ('prod-1', 'SKU-1', 'Mug', 100, 'EUR', 'ACTIVE', '2026-01-01 00:00:00', '2026-01-01 00:00:00'), \
            ('prod-2', 'SKU-2', 'Mug', 100, 'EUR', 'ACTIVE', '2026-01-01 00:00:00', '2026-01-01 00:00:00');";
        db_run!(&mut conn, |c| c.batch_execute(products).await).expect("products");
        for id in ["prod-1", "prod-2"] {
            // An `Insertable` row: diesel alone would prepare it anew on every call.
            let stock = backbone_catalog::db::models::StockRow {
                product_id: id.to_owned(),
                on_hand: 5,
                reserved: 0,
                updated_at: None,
            };
            db_run!(&mut conn, |c| {
                diesel::insert_into(backbone_catalog::db::schema::stock::table)
                    .values(&stock)
                    .prepared()
                    .execute(c)
                    .await
            })
            .expect("insert stock");
        }
        // Two shapes of one call site (a changeset with and without the price), three calls.
        for (id, title, price) in [("prod-1", "Cup", None), ("prod-2", "Jug", None), ("prod-1", "Bowl", Some(250_i64))] {
            #[derive(diesel::AsChangeset)]
            #[diesel(table_name = backbone_catalog::db::schema::products)]
            struct Change<'a> {
                title: &'a str,
                price_minor: Option<i64>,
            }
            let changed = db_run!(&mut conn, |c| {
                diesel::update(p::products.find(id))
                    .set(&Change { title, price_minor: price })
                    .prepared()
                    .execute(c)
                    .await
            })
            .expect("update");
            assert_eq!(changed, 1);
        }
        let rows: Vec<(String, String, i64)> = db_run!(&mut conn, |c| {
            p::products.order(p::id).select((p::id, p::title, p::price_minor)).load(c).await
        })
        .expect("select");
        assert_eq!(
            rows,
            [("prod-1".to_owned(), "Bowl".to_owned(), 250), ("prod-2".to_owned(), "Jug".to_owned(), 100)]
        );

        if backend == Backend::Postgres {
            // The statements this connection keeps prepared: one per shape, none re-prepared per
            // call; a write without `.prepared()` is prepared, run and closed each time.
            let unprepared = db_run!(&mut conn, |c| {
                diesel::update(p::products.find("prod-2")).set(p::title.eq("Pot")).execute(c).await
            })
            .expect("update");
            assert_eq!(unprepared, 1);
            #[derive(diesel::QueryableByName)]
            struct Kept {
                #[diesel(sql_type = Text)]
                statement: String,
                #[diesel(sql_type = BigInt)]
                calls: i64,
            }
            let kept: Vec<Kept> = db_run!(&mut conn, |c| {
                diesel::sql_query(
                    "SELECT statement, generic_plans + custom_plans AS calls FROM pg_prepared_statements \
                     WHERE statement LIKE 'INSERT INTO \"stock\"%' OR statement LIKE 'UPDATE \"products\"%' \
                     ORDER BY statement",
                )
                .load(c)
                .await
            })
            .expect("pg_prepared_statements");
            let kept: Vec<(&str, i64)> = kept
                .iter()
                .map(|k| (k.statement.split(" WHERE").next().unwrap_or_default(), k.calls))
                .collect();
            assert_eq!(
                kept,
                [
                    ("INSERT INTO \"stock\" (\"product_id\", \"on_hand\", \"reserved\", \"updated_at\") VALUES ($1, $2, $3, DEFAULT)", 2),
                    ("UPDATE \"products\" SET \"title\" = $1", 2),
                    ("UPDATE \"products\" SET \"title\" = $1, \"price_minor\" = $2", 1),
                ],
                "{kept:?}"
            );
        }
    }
}

on_both_backends! {
    async fn pipelined_steps_each_answer_and_a_failing_one_rolls_back_the_transaction_with_its_own_error(backend: Backend) {
        use backbone_catalog::db::schema::products::dsl as p;
        let db = TestDb::new(backend).await;
        let (_database, mut conn) = migrated_catalog(&db).await;

        // Independent steps in one transaction: each gives its own value, in step order.
        let answers = db_run!(&mut conn, |c| {
            transaction!(c, async |tx| {
                pipeline!(
                    tx,
                    h,
                    diesel::insert_into(p::products).values(product(1, "SKU-1")).execute(h).await,
                    {
                        let two = diesel::insert_into(p::products).values(product(2, "SKU-2")).execute(h).await?;
                        // Later in the same step: sees its own step's row.
                        let raised = diesel::update(p::products.filter(p::sku.eq("SKU-2")))
                            .set(p::price_minor.eq(250_i64))
                            .execute(h)
                            .await?;
                        diesel::QueryResult::Ok((two, raised))
                    },
                    diesel::insert_into(p::products).values(product(3, "SKU-3")).execute(h).await,
                )
            })
            .await
        })
        .expect("pipeline");
        assert_eq!(answers, (1, (1, 1), 1));

        // A step that fails: the error is its own (not "transaction aborted" from a statement
        // sent after it), and nothing of the transaction stays, other steps' writes included.
        let refused = db_run!(&mut conn, |c| {
            transaction!(c, async |tx| {
                pipeline!(
                    tx,
                    h,
                    diesel::update(p::products.filter(p::sku.eq("SKU-1")))
                        .set(p::title.eq("Renamed"))
                        .execute(h)
                        .await,
                    diesel::insert_into(p::products).values(product(4, "SKU-2")).execute(h).await,
                    diesel::insert_into(p::products).values(product(5, "SKU-5")).execute(h).await,
                )
            })
            .await
        });
        assert!(
            matches!(
                refused,
                Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _))
            ),
            "{refused:?}"
        );
        let rows: Vec<(String, String, i64)> = db_run!(&mut conn, |c| {
            p::products.order(p::sku).select((p::sku, p::title, p::price_minor)).load(c).await
        })
        .expect("select");
        assert_eq!(
            rows,
            vec![
                ("SKU-1".to_owned(), "Product 1".to_owned(), 100),
                ("SKU-2".to_owned(), "Product 2".to_owned(), 250),
                ("SKU-3".to_owned(), "Product 3".to_owned(), 100),
            ]
        );
    }
}

on_both_backends! {
    async fn a_page_of_products_is_limited_by_a_number_postgres_plans_once(backend: Backend) {
        use diesel::sql_types::{BigInt, Text};
        use backbone_catalog::{
            db::products::{ListQuery, list},
            domain::product::ProductOrder,
        };
        let db = TestDb::new(backend).await;
        let (_database, mut conn) = migrated_catalog(&db).await;
        db_run!(&mut conn, |c| {
            c.batch_execute(
                "INSERT INTO products (id, sku, title, price_minor, currency_code, status, created_at, updated_at) VALUES \
                 ('p1', 'S1', 'One', 100, 'EUR', 'ACTIVE', '2026-01-01 00:00:01', '2026-01-01 00:00:01'), \
                 ('p2', 'S2', 'Two', 100, 'EUR', 'ACTIVE', '2026-01-01 00:00:02', '2026-01-01 00:00:02'), \
                 ('p3', 'S3', 'Three', 100, 'EUR', 'DRAFT', '2026-01-01 00:00:03', '2026-01-01 00:00:03'), \
                 ('p4', 'S4', 'Four', 100, 'EUR', 'ACTIVE', '2026-01-01 00:00:04', '2026-01-01 00:00:04'), \
                 ('p5', 'S5', 'Five', 100, 'EUR', 'ACTIVE', '2026-01-01 00:00:05', '2026-01-01 00:00:05'), \
                 ('p6', 'S6', 'Six', 100, 'EUR', 'ACTIVE', '2026-01-01 00:00:06', '2026-01-01 00:00:06'), \
                 ('p7', 'S7', 'Seven', 100, 'EUR', 'ACTIVE', '2026-01-01 00:00:07', '2026-01-01 00:00:07')",
            )
            .await
        })
        .expect("insert products");
        let page = |limit: i64| ListQuery {
            status: Some("ACTIVE"),
            categories: None,
            currency: None,
            min_price: None,
            max_price: None,
            text: None,
            order: ProductOrder::CreatedDesc,
            after: None,
            limit,
        };
        for _ in 0..8 {
            let rows = list(&mut conn, &page(3)).await.expect("list");
            assert_eq!(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["p7", "p6", "p5"]);
        }
        // Other sizes round up to the ladder's next number (6, 11, 21, 51, 101, ...), and the
        // rows past the size asked for are dropped: 4 of the 6 rows LIMIT 6 reads.
        let rows = list(&mut conn, &page(4)).await.expect("list");
        assert_eq!(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["p7", "p6", "p5", "p4"]);
        for size in [10, 8] {
            assert_eq!(list(&mut conn, &page(size)).await.expect("list").len(), 6);
        }

        if backend == Backend::Postgres {
            // One statement per number, the number in its text; after five executions
            // PostgreSQL runs it with its generic plan instead of planning each call again
            // (with `LIMIT $n` every call was planned: 0 generic plans). Sizes 8 and 10 share
            // LIMIT 11.
            #[derive(diesel::QueryableByName)]
            struct Kept {
                #[diesel(sql_type = Text)]
                statement: String,
                #[diesel(sql_type = BigInt)]
                generic_plans: i64,
                #[diesel(sql_type = BigInt)]
                custom_plans: i64,
            }
            let kept: Vec<Kept> = db_run!(&mut conn, |c| {
                diesel::sql_query(
                    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements \
                     WHERE statement LIKE 'SELECT %FROM \"products\"%LIMIT%' \
                     AND statement NOT LIKE '%pg_prepared_statements%' ORDER BY statement",
                )
                .load(c)
                .await
            })
            .expect("pg_prepared_statements");
            let kept: Vec<(&str, i64, i64)> = kept
                .iter()
                .map(|k| (k.statement.rsplit(" DESC").next().unwrap_or_default(), k.generic_plans, k.custom_plans))
                .collect();
            assert_eq!(kept, [(" LIMIT 11", 0, 2), (" LIMIT 3", 3, 5), (" LIMIT 6", 0, 1)], "{kept:?}");
        }
    }
}

on_both_backends! {
    async fn a_transaction_given_up_part_way_leaves_nothing_and_no_open_transaction_behind(backend: Backend) {
        use backbone_catalog::db::schema::products::dsl as p;
        let db = TestDb::new(backend).await;
        let (database, conn) = migrated_catalog(&db).await;
        drop(conn);

        // The caller gives up (a deadline) after the body's first write, before it ends.
        let mut conn = database.conn().await.expect("conn");
        let given_up = tokio::time::timeout(
            Duration::from_millis(300),
            async {
                db_run!(&mut conn, |c| {
                    transaction!(c, async |tx| {
                        diesel::insert_into(p::products).values(product(1, "SKU-1")).execute(tx).await?;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Ok::<_, diesel::result::Error>(())
                    })
                    .await
                })
            },
        )
        .await;
        assert!(given_up.is_err(), "the body should still have been sleeping");
        drop(conn);

        // Every connection the pool hands out next writes outside any transaction: a row
        // written now is seen at once from another connection, and the given-up row never is.
        let mut writers = Vec::new();
        for n in 2..6 {
            let mut writer = database.conn().await.expect("conn");
            db_run!(&mut writer, |c| {
                diesel::insert_into(p::products).values(product(n, &format!("SKU-{n}"))).execute(c).await
            })
            .expect("insert");
            writers.push(writer);
        }
        drop(writers);
        let mut reader = database.conn().await.expect("conn");
        let skus: Vec<String> = db_run!(&mut reader, |c| {
            p::products.order(p::sku).select(p::sku).load(c).await
        })
        .expect("select");
        assert_eq!(skus, ["SKU-2", "SKU-3", "SKU-4", "SKU-5"]);
    }
}
