//! The catalog service end to end over gRPC, on SQLite and PostgreSQL, with tokens from a real
//! auth service: products and their errors, visibility, categories, stock, reservations that
//! never oversell under parallel load, expiry by the sweeper, and paging over a changing
//! catalog.

#![allow(
    clippy::expect_used,
    reason = "end-to-end tests: a failed expectation is a failed test, with its message"
)]

use std::{collections::HashSet, sync::Arc};

use backbone_catalog::db::{models::ProductRow, schema::products};
use backbone_common::{config::DatabaseArgs, db::Database, db_run};
use backbone_proto::{catalog as pb, common::Money};
use backbone_tests::{
    Backend,
    auth_support::{bearer, reason, violated_fields},
    binary_path,
    catalog_support::{Stack, create, eur, product, reserve, stock, stock_up},
    on_both_backends,
};
use diesel_async::{AsyncConnection as _, RunQueryDsl as _};
use tonic::Code;
use tonic_types::StatusExt as _;

fn update_request(product: pb::Product, paths: &[&str]) -> pb::UpdateProductRequest {
    pb::UpdateProductRequest {
        product: Some(product),
        update_mask: Some(backbone_proto::pbjson_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
    }
}

on_both_backends! {
    async fn products_are_created_read_updated_and_archived(backend: Backend) {
        let mut stack = Stack::start(backend, &[]).await;
        let admin = stack.admin.clone();
        let customer = stack.customer.clone();
        let shoes = stack
            .client
            .create_category(bearer(pb::CreateCategoryRequest { category: Some(pb::Category { slug: "shoes".into(), name: "Shoes".into(), ..Default::default() }) }, &admin))
            .await
            .expect("category")
            .into_inner()
            .category
            .expect("category");
        let mut runner = product("RUN-1", "Trail Runner", eur(8999));
        runner.category_ids = vec![shoes.id.clone()];
        runner.attributes = [("color".to_owned(), "red".to_owned())].into();
        runner.image_urls = vec!["https://cdn.example.com/run-1.png".into()];
        let created = create(&mut stack, runner.clone()).await;
        assert_eq!((created.sku.as_str(), created.price.clone()), ("RUN-1", Some(eur(8999))));
        assert_eq!(created.category_ids, vec![shoes.id.clone()]);
        assert!(!created.etag.is_empty() && !created.id.is_empty());
        // GetProduct sends the product's encoding kept with its cached copy: the same product as
        // the create's answer and as BatchGetProducts (which encodes it on each call), read
        // from the database the first time and from the cache the second.
        for _ in 0..2 {
            let got = stack.client.get_product(pb::GetProductRequest { product_id: created.id.clone() }).await.expect("get").into_inner().product.expect("product");
            let batch = stack.client.batch_get_products(pb::BatchGetProductsRequest { product_ids: vec![created.id.clone()] }).await.expect("batch").into_inner();
            assert_eq!(batch.products, vec![got.clone()]);
            let untimed = |p: &pb::Product| pb::Product { create_time: None, update_time: None, ..p.clone() };
            assert_eq!(untimed(&got), untimed(&created));
            assert!(got.create_time.is_some() && got.update_time.is_some());
        }
        let no_id = stack.client.get_product(pb::GetProductRequest::default()).await.expect_err("no id");
        assert_eq!((no_id.code(), violated_fields(&no_id)), (Code::InvalidArgument, vec!["product_id".to_owned()]));
        let unknown = stack.client.get_product(pb::GetProductRequest { product_id: "nope".into() }).await.expect_err("unknown");
        assert_eq!(unknown.code(), Code::NotFound);

        // Duplicate SKU, bad money, missing role.
        let duplicate = stack.client.create_product(bearer(pb::CreateProductRequest { product: Some(runner.clone()) }, &admin)).await.expect_err("duplicate");
        assert_eq!((duplicate.code(), reason(&duplicate).as_str()), (Code::AlreadyExists, "SKU_ALREADY_EXISTS"));
        for (money, field) in [
            (Money { currency_code: "eur".into(), amount_minor: 1 }, "product.price.currency_code"),
            (Money { currency_code: "XYZ".into(), amount_minor: 1 }, "product.price.currency_code"),
            (Money { currency_code: "EUR".into(), amount_minor: -5 }, "product.price.amount_minor"),
        ] {
            let bad = stack.client.create_product(bearer(pb::CreateProductRequest { product: Some(product("BAD-1", "Bad", money)) }, &admin)).await.expect_err("bad money");
            assert_eq!((bad.code(), violated_fields(&bad)), (Code::InvalidArgument, vec![field.to_owned()]));
        }
        let mut unknown_category = product("BAD-2", "Bad", eur(1));
        unknown_category.category_ids = vec!["nope".into()];
        let bad = stack.client.create_product(bearer(pb::CreateProductRequest { product: Some(unknown_category) }, &admin)).await.expect_err("unknown category");
        assert_eq!(violated_fields(&bad), vec!["product.category_ids"]);
        let as_customer = stack.client.create_product(bearer(pb::CreateProductRequest { product: Some(product("C-1", "C", eur(1))) }, &customer)).await.expect_err("customer");
        assert_eq!(as_customer.code(), Code::PermissionDenied);
        let anonymous = stack.client.create_product(pb::CreateProductRequest { product: Some(product("C-1", "C", eur(1))) }).await.expect_err("anonymous");
        assert_eq!(anonymous.code(), Code::Unauthenticated);

        // Drafts are invisible to anonymous callers and customers.
        let mut draft = product("DRAFT-1", "Secret Shoe", eur(100));
        draft.status = pb::ProductStatus::Draft as i32;
        let draft = create(&mut stack, draft).await;
        let hidden = stack.client.get_product(pb::GetProductRequest { product_id: draft.id.clone() }).await.expect_err("hidden");
        assert_eq!(hidden.code(), Code::NotFound);
        let seen = stack.client.get_product(bearer(pb::GetProductRequest { product_id: draft.id.clone() }, &admin)).await.expect("admin sees drafts");
        assert_eq!(seen.into_inner().product.expect("product").sku, "DRAFT-1");
        let batch = stack
            .client
            .batch_get_products(pb::BatchGetProductsRequest { product_ids: vec!["missing".into(), created.id.clone(), draft.id.clone(), created.id.clone()] })
            .await
            .expect("batch")
            .into_inner();
        assert_eq!(batch.products.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec![created.id.clone()]);
        assert_eq!(batch.missing_product_ids, vec!["missing".to_owned(), draft.id.clone()]);

        // Update with the etag; a stale etag is ABORTED with the current one.
        let mut change = created.clone();
        change.title = "Trail Runner 2".into();
        let updated = stack.client.update_product(bearer(update_request(change.clone(), &["title"]), &admin)).await.expect("update").into_inner().product.expect("product");
        assert_eq!(updated.title, "Trail Runner 2");
        assert_ne!(updated.etag, created.etag);
        let fetched = stack.client.get_product(pb::GetProductRequest { product_id: created.id.clone() }).await.expect("get").into_inner().product.expect("product");
        assert_eq!(fetched.title, "Trail Runner 2", "this replica's write evicts its cache");
        assert_eq!((updated.category_ids.clone(), fetched.category_ids.clone()), (vec![shoes.id.clone()], vec![shoes.id.clone()]), "a title change keeps the categories");
        // Replacing the categories shows in the answer, in reads and in the category filter.
        let boots = stack.client.create_category(bearer(pb::CreateCategoryRequest { category: Some(pb::Category { slug: "boots".into(), name: "Boots".into(), ..Default::default() }) }, &admin)).await.expect("category").into_inner().category.expect("category");
        let mut both = vec![boots.id.clone(), shoes.id.clone()];
        both.sort();
        let mut recategorised = updated.clone();
        recategorised.category_ids = vec![shoes.id.clone(), boots.id.clone()];
        let updated = stack.client.update_product(bearer(update_request(recategorised, &["category_ids"]), &admin)).await.expect("update categories").into_inner().product.expect("product");
        let fetched = stack.client.get_product(pb::GetProductRequest { product_id: created.id.clone() }).await.expect("get").into_inner().product.expect("product");
        assert_eq!((updated.category_ids.clone(), fetched.category_ids), (both.clone(), both));
        let in_boots = stack.client.list_products(pb::ListProductsRequest { category_id: boots.id.clone(), ..Default::default() }).await.expect("list").into_inner().products;
        assert_eq!(in_boots.iter().map(|p| (p.id.clone(), p.category_ids.len())).collect::<Vec<_>>(), vec![(created.id.clone(), 2)]);
        let mut change = created.clone();
        change.title = "Trail Runner 2".into();
        let stale = stack.client.update_product(bearer(update_request(change, &["title"]), &admin)).await.expect_err("stale");
        assert_eq!((stale.code(), reason(&stale).as_str()), (Code::Aborted, "ETAG_MISMATCH"));
        let info = stale.get_error_details().error_info().cloned().expect("error info");
        assert_eq!(info.metadata.get("current_etag"), Some(&updated.etag));
        let bad_path = stack.client.update_product(bearer(update_request(updated.clone(), &["id"]), &admin)).await.expect_err("bad path");
        assert_eq!(violated_fields(&bad_path), vec!["update_mask"]);

        // Archive: gone for anonymous callers, idempotent.
        for _ in 0..2 {
            let archived = stack.client.archive_product(bearer(pb::ArchiveProductRequest { product_id: created.id.clone(), etag: String::new() }, &admin)).await.expect("archive").into_inner().product.expect("product");
            assert_eq!(archived.status, pb::ProductStatus::Archived as i32);
        }
        let gone = stack.client.get_product(pb::GetProductRequest { product_id: created.id.clone() }).await.expect_err("archived");
        assert_eq!(gone.code(), Code::NotFound);
        // The category is in use.
        let in_use = stack.client.delete_category(bearer(pb::DeleteCategoryRequest { category_id: shoes.id.clone(), etag: String::new() }, &admin)).await.expect_err("in use");
        assert_eq!((in_use.code(), reason(&in_use).as_str()), (Code::FailedPrecondition, "CATEGORY_HAS_PRODUCTS"));
        stack.stop().await;
    }
}

on_both_backends! {
    async fn listing_filters_orders_and_refuses_foreign_page_tokens(backend: Backend) {
        let mut stack = Stack::start(backend, &[]).await;
        let admin = stack.admin.clone();
        let sport = stack.client.create_category(bearer(pb::CreateCategoryRequest { category: Some(pb::Category { slug: "sport".into(), name: "Sport".into(), ..Default::default() }) }, &admin)).await.expect("category").into_inner().category.expect("c");
        let running = stack.client.create_category(bearer(pb::CreateCategoryRequest { category: Some(pb::Category { slug: "running".into(), name: "Running".into(), parent_id: sport.id.clone(), ..Default::default() }) }, &admin)).await.expect("category").into_inner().category.expect("c");
        let mut ids = Vec::new();
        for (i, (title, cents)) in [("Red Ball", 1500), ("Blue Ball", 900), ("Running Shoe", 12000), ("ÜBER Sock", 500)].into_iter().enumerate() {
            let mut p = product(&format!("SKU-{i}"), title, eur(cents));
            if title.contains("Shoe") {
                p.category_ids = vec![running.id.clone()];
            }
            ids.push(create(&mut stack, p).await.id);
        }
        let list = |request: pb::ListProductsRequest| {
            let mut client = stack.client.clone();
            async move { client.list_products(request).await.map(|r| r.into_inner()) }
        };
        let titles = |page: &pb::ListProductsResponse| page.products.iter().map(|p| p.title.clone()).collect::<Vec<_>>();
        let by_price = list(pb::ListProductsRequest { order_by: "price".into(), ..Default::default() }).await.expect("list");
        assert_eq!(titles(&by_price), ["ÜBER Sock", "Blue Ball", "Red Ball", "Running Shoe"]);
        let text = list(pb::ListProductsRequest { query: "BALL".into(), order_by: "title".into(), ..Default::default() }).await.expect("text");
        assert_eq!(titles(&text), ["Blue Ball", "Red Ball"]);
        let unicode = list(pb::ListProductsRequest { query: "über".into(), ..Default::default() }).await.expect("unicode");
        assert_eq!(titles(&unicode), ["ÜBER Sock"]);
        let range = list(pb::ListProductsRequest { min_price: Some(eur(900)), max_price: Some(eur(1500)), order_by: "price desc".into(), ..Default::default() }).await.expect("range");
        assert_eq!(titles(&range), ["Red Ball", "Blue Ball"]);
        let direct = list(pb::ListProductsRequest { category_id: sport.id.clone(), ..Default::default() }).await.expect("category");
        assert!(direct.products.is_empty());
        let nested = list(pb::ListProductsRequest { category_id: sport.id.clone(), include_subcategories: true, ..Default::default() }).await.expect("subtree");
        assert_eq!(titles(&nested), ["Running Shoe"]);

        // Pages, and tokens that belong to another query.
        let first = list(pb::ListProductsRequest { page_size: 2, ..Default::default() }).await.expect("page 1");
        assert_eq!(first.products.len(), 2);
        assert!(!first.next_page_token.is_empty());
        let second = list(pb::ListProductsRequest { page_size: 2, page_token: first.next_page_token.clone(), ..Default::default() }).await.expect("page 2");
        assert_eq!(second.products.len(), 2);
        assert!(second.next_page_token.is_empty());
        let foreign = list(pb::ListProductsRequest { page_size: 2, order_by: "price".into(), page_token: first.next_page_token.clone(), ..Default::default() }).await.expect_err("foreign token");
        assert_eq!((foreign.code(), reason(&foreign).as_str()), (Code::InvalidArgument, "INVALID_PAGE_TOKEN"));
        let garbage = list(pb::ListProductsRequest { page_token: "garbage".into(), ..Default::default() }).await.expect_err("garbage");
        assert_eq!(reason(&garbage), "INVALID_PAGE_TOKEN");
        let mixed = list(pb::ListProductsRequest { min_price: Some(eur(1)), max_price: Some(Money { currency_code: "USD".into(), amount_minor: 5 }), ..Default::default() }).await.expect_err("currencies");
        assert_eq!(violated_fields(&mixed), vec!["max_price.currency_code"]);
        let drafts = list(pb::ListProductsRequest { status: pb::ProductStatus::Draft as i32, ..Default::default() }).await.expect_err("not admin");
        assert_eq!(drafts.code(), Code::PermissionDenied);
        let bad_order = list(pb::ListProductsRequest { order_by: "sku".into(), ..Default::default() }).await.expect_err("order");
        assert_eq!(violated_fields(&bad_order), vec!["order_by"]);
        stack.stop().await;
    }
}

on_both_backends! {
    async fn a_hundred_parallel_reservations_never_oversell(backend: Backend) {
        let mut stack = Stack::start(backend, &["--db-pool-size", "8"]).await;
        let id = create(&mut stack, product("HOT-1", "Hot Item", eur(100))).await.id;
        stock_up(&mut stack, &id, 10).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(100));
        let calls = (0..100).map(|i| {
            let (mut client, token, id, barrier) = (stack.client.clone(), stack.service.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                reserve(&mut client, &token, &format!("order-{i}"), &[(&id, 1)], None).await
            })
        });
        let results: Vec<_> = futures::future::join_all(calls).await.into_iter().map(|r| r.expect("join")).collect();
        let held = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(held, 10, "exactly the ten available units are held");
        for refused in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!((refused.code(), reason(refused).as_str()), (Code::FailedPrecondition, "INSUFFICIENT_STOCK"));
            let failure = refused.get_error_details().precondition_failure().cloned().expect("precondition failure");
            assert_eq!(failure.violations[0].subject, id);
        }
        let now = stock(&mut stack, &id).await;
        assert_eq!((now.on_hand, now.reserved, now.available), (10, 10, 0));

        // Mixed multi-item reservations over two products.
        let a = create(&mut stack, product("MIX-A", "A", eur(1))).await.id;
        let b = create(&mut stack, product("MIX-B", "B", eur(1))).await.id;
        stock_up(&mut stack, &a, 7).await;
        stock_up(&mut stack, &b, 5).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(60));
        let calls = (0..60).map(|i| {
            let (mut client, token, a, b, barrier) = (stack.client.clone(), stack.service.clone(), a.clone(), b.clone(), barrier.clone());
            tokio::spawn(async move {
                let items: Vec<(String, i64)> = match i % 3 {
                    0 => vec![(a, 1), (b, 1)],
                    1 => vec![(b, 2), (a, 1)],
                    _ => vec![(a, 2)],
                };
                let refs: Vec<(&str, i64)> = items.iter().map(|(p, q)| (p.as_str(), *q)).collect();
                barrier.wait().await;
                reserve(&mut client, &token, &format!("mix-{i}"), &refs, None).await.map(|_| items)
            })
        });
        let results: Vec<_> = futures::future::join_all(calls).await.into_iter().map(|r| r.expect("join")).collect();
        let (mut want_a, mut want_b) = (0, 0);
        for items in results.iter().filter_map(|r| r.as_ref().ok()) {
            for (p, q) in items {
                if *p == a { want_a += q } else { want_b += q }
            }
        }
        let (sa, sb) = (stock(&mut stack, &a).await, stock(&mut stack, &b).await);
        assert_eq!((sa.reserved, sb.reserved), (want_a, want_b), "reserved is exactly what the successful reservations hold");
        assert!(sa.reserved <= sa.on_hand && sb.reserved <= sb.on_hand);
        assert!(results.iter().any(|r| r.is_err()), "more was asked than exists");
        stack.stop().await;
    }
}

on_both_backends! {
    async fn reservations_commit_release_and_expire(backend: Backend) {
        let mut stack = Stack::start(backend, &[]).await;
        let (service, customer, admin) = (stack.service.clone(), stack.customer.clone(), stack.admin.clone());
        let id = create(&mut stack, product("RES-1", "Reservable", eur(100))).await.id;
        stock_up(&mut stack, &id, 5).await;
        let mut client = stack.client.clone();

        // Idempotent on the id; a different request under the same id conflicts.
        let first = reserve(&mut client, &service, "order-1", &[(&id, 2)], None).await.expect("reserve");
        assert_eq!(first.state, pb::ReservationState::Held as i32);
        let again = reserve(&mut client, &service, "order-1", &[(&id, 2)], None).await.expect("same again");
        assert_eq!(again, first);
        let conflict = reserve(&mut client, &service, "order-1", &[(&id, 3)], None).await.expect_err("conflict");
        assert_eq!((conflict.code(), reason(&conflict).as_str()), (Code::FailedPrecondition, "RESERVATION_ID_CONFLICT"));
        assert_eq!(stock(&mut stack, &id).await.reserved, 2);
        let by_customer = reserve(&mut client, &customer, "order-x", &[(&id, 1)], None).await.expect_err("customers cannot hold stock");
        assert_eq!(by_customer.code(), Code::PermissionDenied);
        let bad = reserve(&mut client, &service, "bad id!", &[(&id, 0)], Some(0)).await.expect_err("bad input");
        assert_eq!(violated_fields(&bad), vec!["reservation_id", "items[0].quantity", "ttl"]);

        // Commit: units leave on hand; a movement is recorded; committing again is a no-op.
        let committed = client.commit_reservation(bearer(pb::CommitReservationRequest { reservation_id: "order-1".into() }, &service)).await.expect("commit").into_inner().reservation.expect("r");
        assert_eq!(committed.state, pb::ReservationState::Committed as i32);
        let now = stock(&mut stack, &id).await;
        assert_eq!((now.on_hand, now.reserved, now.available), (3, 0, 3));
        client.commit_reservation(bearer(pb::CommitReservationRequest { reservation_id: "order-1".into() }, &service)).await.expect("commit again");
        assert_eq!(stock(&mut stack, &id).await.on_hand, 3);
        let released = client.release_reservation(bearer(pb::ReleaseReservationRequest { reservation_id: "order-1".into() }, &service)).await.expect_err("committed");
        assert_eq!(reason(&released), "RESERVATION_ALREADY_COMMITTED");
        let movements = client.list_stock_movements(bearer(pb::ListStockMovementsRequest { product_id: id.clone(), ..Default::default() }, &admin)).await.expect("movements").into_inner().movements;
        assert_eq!(movements.iter().map(|m| (m.kind, m.delta, m.on_hand_after)).collect::<Vec<_>>(), vec![
            (pb::StockMovementKind::ReservationCommit as i32, -2, 3),
            (pb::StockMovementKind::Adjustment as i32, 5, 5),
        ]);

        // Release gives units back; AdjustStock cannot go below what is reserved.
        reserve(&mut client, &service, "order-2", &[(&id, 3)], None).await.expect("reserve all");
        let below = client.adjust_stock(bearer(pb::AdjustStockRequest { product_id: id.clone(), delta: -1, reason: "damaged".into(), request_id: String::new() }, &admin)).await.expect_err("below reserved");
        assert_eq!(reason(&below), "INSUFFICIENT_STOCK");
        let released = client.release_reservation(bearer(pb::ReleaseReservationRequest { reservation_id: "order-2".into() }, &service)).await.expect("release").into_inner().reservation.expect("r");
        assert_eq!(released.state, pb::ReservationState::Released as i32);
        let not_held = client.commit_reservation(bearer(pb::CommitReservationRequest { reservation_id: "order-2".into() }, &service)).await.expect_err("released");
        assert_eq!(reason(&not_held), "RESERVATION_NOT_HELD");
        assert_eq!(stock(&mut stack, &id).await.available, 3);

        // Expiry: nobody calls Release, the sweeper gives the units back.
        reserve(&mut client, &service, "order-3", &[(&id, 3)], Some(1)).await.expect("short hold");
        assert_eq!(stock(&mut stack, &id).await.available, 0);
        let mut state = 0;
        for _ in 0..60 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            state = client.get_reservation(bearer(pb::GetReservationRequest { reservation_id: "order-3".into() }, &service)).await.expect("get").into_inner().reservation.expect("r").state;
            if state == pb::ReservationState::Expired as i32 {
                break;
            }
        }
        assert_eq!(state, pb::ReservationState::Expired as i32);
        assert_eq!(stock(&mut stack, &id).await.available, 3);

        // AdjustStock is idempotent on its request id.
        let adjust = |delta: i64| pb::AdjustStockRequest { product_id: id.clone(), delta, reason: "delivery".into(), request_id: "delivery-0001".into() };
        let once = client.adjust_stock(bearer(adjust(4), &admin)).await.expect("adjust").into_inner();
        let twice = client.adjust_stock(bearer(adjust(4), &admin)).await.expect("replay").into_inner();
        assert_eq!(once.movement, twice.movement);
        assert_eq!(stock(&mut stack, &id).await.on_hand, 7);
        let other = client.adjust_stock(bearer(adjust(5), &admin)).await.expect_err("other request");
        assert_eq!(reason(&other), "REQUEST_ID_CONFLICT");
        stack.stop().await;
    }
}

on_both_backends! {
    async fn walking_ten_thousand_products_sees_each_once_while_they_change(backend: Backend) {
        let mut stack = Stack::start(backend, &[]).await;
        // Ten thousand products straight into the database (creating them is not under test).
        let database = Database::new(&stack.catalog_db.url, &DatabaseArgs { db_pool_size: 2, db_timeout: std::time::Duration::from_secs(5), db_read_connections: 2 }, backbone_catalog::MIGRATIONS).expect("db");
        database.prepare().await.expect("ready");
        let mut conn = database.conn().await.expect("conn");
        let start = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() - 3600, 0).expect("time").naive_utc();
        let rows: Vec<ProductRow> = (0..10_000)
            .map(|i| ProductRow {
                id: uuid::Uuid::now_v7().to_string(),
                sku: format!("BULK-{i:05}"),
                title: format!("Bulk {i}"),
                description: String::new(),
                price_minor: 100 + i64::from(i % 50),
                currency_code: "EUR".into(),
                status: "ACTIVE".into(),
                version: 1,
                // Many share a timestamp, so the id tie-break is exercised.
                created_at: start + chrono::Duration::seconds(i64::from(i / 7)),
                updated_at: start,
                attributes: "{}".into(),
                image_urls: "[]".into(),
                search_text: format!("bulk {i}\n"),
                category_ids: "[]".into(),
            })
            .collect();
        db_run!(&mut conn, |c| {
            c.transaction(async |tx| {
                for chunk in rows.chunks(500) {
                    for row in chunk {
                        diesel::insert_into(products::table).values(row).execute(tx).await?;
                    }
                }
                Ok::<_, diesel::result::Error>(())
            })
            .await
        })
        .expect("bulk insert");
        let initial: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();

        // While walking, others add products and change existing ones.
        let writer = {
            let (mut client, admin, some) = (stack.client.clone(), stack.admin.clone(), rows[..50].to_vec());
            tokio::spawn(async move {
                for (i, row) in some.iter().enumerate() {
                    client.create_product(bearer(pb::CreateProductRequest { product: Some(product(&format!("NEW-{i}"), "New", eur(1))) }, &admin)).await.expect("insert during walk");
                    let change = pb::Product { id: row.id.clone(), title: format!("Changed {i}"), ..Default::default() };
                    client.update_product(bearer(update_request(change, &["title"]), &admin)).await.expect("update during walk");
                }
            })
        };
        let mut seen: HashSet<String> = HashSet::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = stack.client.list_products(pb::ListProductsRequest { page_size: 100, page_token: token.clone(), ..Default::default() }).await.expect("page").into_inner();
            for p in page.products {
                assert!(seen.insert(p.id.clone()), "product {} came twice", p.sku);
            }
            pages += 1;
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        writer.await.expect("writer");
        assert!(pages >= 100);
        let missed: Vec<&String> = initial.iter().filter(|id| !seen.contains(*id)).collect();
        assert!(missed.is_empty(), "{} products that existed at the start were skipped", missed.len());
        stack.stop().await;
    }
}

/// Runs `backbone-catalog seed` on `database_url` as a process and returns what it printed.
fn run_seed(database_url: &str) -> String {
    let out = std::process::Command::new(binary_path("backbone-catalog"))
        .args([
            "seed",
            "--log-format",
            "text",
            "--database-url",
            database_url,
        ])
        .output()
        .expect("seed runs");
    assert!(
        out.status.success(),
        "seed failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

on_both_backends! {
    async fn seed_loads_a_sample_catalog_once(backend: Backend) {
        let mut stack = Stack::start(backend, &[]).await;
        let first = run_seed(&stack.catalog_db.url);
        assert!(first.contains("4 categories, 5 products and 5 stock levels added"), "{first}");
        // A second run finds everything in place and changes nothing.
        let again = run_seed(&stack.catalog_db.url);
        assert!(again.contains("0 categories, 0 products and 0 stock levels added"), "{again}");

        // An anonymous caller's first ListProducts shows the sample, in stock.
        let page = stack.client.list_products(pb::ListProductsRequest::default()).await.expect("list").into_inner();
        let skus: HashSet<String> = page.products.iter().map(|p| p.sku.clone()).collect();
        assert_eq!(skus.len(), 5, "{skus:?}");
        assert!(skus.contains("TSHIRT-BLUE-M") && skus.contains("BOOK-DISTRIBUTED"));
        let ids: Vec<String> = page.products.iter().map(|p| p.id.clone()).collect();
        let levels = stack.client.batch_get_stock(pb::BatchGetStockRequest { product_ids: ids }).await.expect("stock").into_inner();
        assert_eq!(levels.stocks.len(), 5);
        assert!(levels.stocks.iter().all(|s| s.on_hand > 0 && s.available == s.on_hand), "{levels:?}");
        let blue = page.products.iter().find(|p| p.sku == "TSHIRT-BLUE-M").expect("blue shirt");
        assert_eq!(blue.price, Some(eur(2_500)));
        assert_eq!(stock(&mut stack, &blue.id).await.on_hand, 40);

        // The t-shirts sit under apparel: listing apparel with its descendants finds them.
        let categories = stack.client.list_categories(pb::ListCategoriesRequest::default()).await.expect("categories").into_inner();
        let apparel = categories.categories.iter().find(|c| c.slug == "apparel").expect("apparel");
        let shirts = stack.client.list_products(pb::ListProductsRequest { category_id: apparel.id.clone(), include_subcategories: true, ..Default::default() }).await.expect("list").into_inner();
        assert_eq!(shirts.products.len(), 2);
        stack.stop().await;
    }
}

fn category(slug: &str, name: &str, parent_id: &str) -> pb::CreateCategoryRequest {
    pb::CreateCategoryRequest {
        category: Some(pb::Category {
            slug: slug.into(),
            name: name.into(),
            parent_id: parent_id.into(),
            ..Default::default()
        }),
    }
}

fn category_update(category: pb::Category, paths: &[&str]) -> pb::UpdateCategoryRequest {
    pb::UpdateCategoryRequest {
        category: Some(category),
        update_mask: Some(backbone_proto::pbjson_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
    }
}

on_both_backends! {
    async fn categories_form_a_tree_that_refuses_cycles_stale_writes_and_busy_deletes(backend: Backend) {
        let mut stack = Stack::start(backend, &[]).await;
        let (admin, customer) = (stack.admin.clone(), stack.customer.clone());
        let create_category = |request| {
            let (mut client, admin) = (stack.client.clone(), admin.clone());
            async move { client.create_category(bearer(request, &admin)).await.map(|r| r.into_inner().category.expect("category")) }
        };
        let home = create_category(category("home", "Home", "")).await.expect("home");
        let kitchen = create_category(category("kitchen", "Kitchen", &home.id)).await.expect("kitchen");
        let knives = create_category(category("knives", "Knives", &kitchen.id)).await.expect("knives");
        let garden = create_category(category("garden", "Garden", "")).await.expect("garden");
        let taken = create_category(category("home", "Another home", "")).await.expect_err("slug taken");
        assert_eq!((taken.code(), reason(&taken).as_str()), (Code::AlreadyExists, "SLUG_ALREADY_EXISTS"));
        let bad = create_category(category("Not A Slug!", "", "")).await.expect_err("bad fields");
        assert_eq!(violated_fields(&bad), vec!["category.slug", "category.name"]);
        let orphan = create_category(category("orphan", "Orphan", "no-such-id")).await.expect_err("unknown parent");
        assert_eq!(violated_fields(&orphan), vec!["category.parent_id"]);
        let by_customer = stack.client.create_category(bearer(category("toys", "Toys", ""), &customer)).await.expect_err("customer");
        assert_eq!(by_customer.code(), Code::PermissionDenied);

        // Reads: one category, children of one, the whole subtree.
        let got = stack.client.get_category(pb::GetCategoryRequest { category_id: kitchen.id.clone() }).await.expect("get").into_inner().category.expect("c");
        assert_eq!((got.slug.as_str(), got.parent_id.as_str()), ("kitchen", home.id.as_str()));
        let slugs = |page: pb::ListCategoriesResponse| page.categories.into_iter().map(|c| c.slug).collect::<Vec<_>>();
        let roots = stack.client.list_categories(pb::ListCategoriesRequest::default()).await.expect("roots").into_inner();
        assert_eq!(slugs(roots), ["garden", "home"]);
        let children = stack.client.list_categories(pb::ListCategoriesRequest { parent_id: home.id.clone(), ..Default::default() }).await.expect("children").into_inner();
        assert_eq!(slugs(children), ["kitchen"]);
        let subtree = stack.client.list_categories(pb::ListCategoriesRequest { parent_id: home.id.clone(), include_descendants: true, ..Default::default() }).await.expect("subtree").into_inner();
        assert_eq!(slugs(subtree), ["kitchen", "knives"]);

        // Updates: rename with the etag, then the old etag is stale and the error names the new one.
        let renamed = stack.client.update_category(bearer(category_update(pb::Category { id: kitchen.id.clone(), name: "Kitchen & dining".into(), etag: kitchen.etag.clone(), ..Default::default() }, &["name"]), &admin)).await.expect("rename").into_inner().category.expect("c");
        assert_eq!(renamed.name, "Kitchen & dining");
        assert_ne!(renamed.etag, kitchen.etag);
        let stale = stack.client.update_category(bearer(category_update(pb::Category { id: kitchen.id.clone(), name: "Late".into(), etag: kitchen.etag.clone(), ..Default::default() }, &["name"]), &admin)).await.expect_err("stale");
        assert_eq!((stale.code(), reason(&stale).as_str()), (Code::Aborted, "ETAG_MISMATCH"));
        let info = stale.get_error_details().error_info().cloned().expect("error info");
        assert_eq!(info.metadata.get("current_etag"), Some(&renamed.etag));
        // Moving home under its own grandchild would make a cycle.
        let cycle = stack.client.update_category(bearer(category_update(pb::Category { id: home.id.clone(), parent_id: knives.id.clone(), ..Default::default() }, &["parent_id"]), &admin)).await.expect_err("cycle");
        assert_eq!((cycle.code(), reason(&cycle).as_str()), (Code::InvalidArgument, "CATEGORY_CYCLE"));
        // Moving the kitchen under garden is fine; its knives come along.
        stack.client.update_category(bearer(category_update(pb::Category { id: kitchen.id.clone(), parent_id: garden.id.clone(), ..Default::default() }, &["parent_id"]), &admin)).await.expect("move");
        let garden_tree = stack.client.list_categories(pb::ListCategoriesRequest { parent_id: garden.id.clone(), include_descendants: true, ..Default::default() }).await.expect("moved").into_inner();
        assert_eq!(slugs(garden_tree), ["kitchen", "knives"]);
        let clash = stack.client.update_category(bearer(category_update(pb::Category { id: garden.id.clone(), slug: "home".into(), ..Default::default() }, &["slug"]), &admin)).await.expect_err("slug clash");
        assert_eq!(reason(&clash), "SLUG_ALREADY_EXISTS");

        // Deletes: refused while children use it, then leaf first.
        let busy = stack.client.delete_category(bearer(pb::DeleteCategoryRequest { category_id: kitchen.id.clone(), etag: String::new() }, &admin)).await.expect_err("has children");
        assert_eq!((busy.code(), reason(&busy).as_str()), (Code::FailedPrecondition, "CATEGORY_HAS_CHILDREN"));
        stack.client.delete_category(bearer(pb::DeleteCategoryRequest { category_id: knives.id.clone(), etag: knives.etag.clone() }, &admin)).await.expect("delete leaf");
        let gone = stack.client.get_category(pb::GetCategoryRequest { category_id: knives.id.clone() }).await.expect_err("deleted");
        assert_eq!(gone.code(), Code::NotFound);
        stack.client.delete_category(bearer(pb::DeleteCategoryRequest { category_id: kitchen.id.clone(), etag: String::new() }, &admin)).await.expect("now empty");
        stack.stop().await;
    }
}

/// Reads by id run on PostgreSQL connections they share (`--db-read-connections`); when the
/// database drops them (a restart, a failover), the next reads connect again by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_by_id_reconnect_after_the_database_closes_their_connections() {
    // No product cache: every read goes to the database.
    let mut stack = Stack::start(Backend::Postgres, &["--product-cache-capacity", "0"]).await;
    let mug = create(&mut stack, product("MUG-1", "Mug", eur(900))).await;
    let read = |client: &mut backbone_tests::catalog_support::CatalogClient| {
        let mut client = client.clone();
        let id = mug.id.clone();
        async move {
            client
                .get_product(pb::GetProductRequest { product_id: id })
                .await
        }
    };
    assert_eq!(
        read(&mut stack.client)
            .await
            .expect("read")
            .into_inner()
            .product
            .expect("product")
            .sku,
        "MUG-1"
    );

    let closed = stack.catalog_db.terminate_connections().await;
    assert!(closed >= 1, "the catalog held no connection to close");
    // Back within two seconds: sooner than the readiness monitor's next check (every 5 s), so
    // the reconnect is the read path's own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut answers = Vec::new();
    loop {
        let answer = read(&mut stack.client).await;
        let ok = answer.is_ok();
        answers.push(
            answer
                .map(|r| r.into_inner().product.map(|p| p.sku))
                .map_err(|s| s.code()),
        );
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reads did not recover: {answers:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(answers.last(), Some(&Ok(Some("MUG-1".to_owned()))));
    // And every read after it: reads take the shared connections in turn, so this covers each.
    for _ in 0..4 {
        read(&mut stack.client)
            .await
            .expect("a read after the reconnect");
    }
    // Every read of a batch answers too, on the same shared connections.
    let batch = stack
        .client
        .batch_get_products(pb::BatchGetProductsRequest {
            product_ids: vec![mug.id.clone(), "missing".into()],
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(
        (batch.products.len(), batch.missing_product_ids),
        (1, vec!["missing".to_owned()])
    );
    stack.stop().await;
}
