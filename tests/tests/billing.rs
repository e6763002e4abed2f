//! The billing service end to end with the real auth and catalog services over gRPC, on SQLite
//! and PostgreSQL: carts, the checkout saga with every test-gateway outcome (paid, declined,
//! processing error and timeout settled by the recovery worker), idempotent replays, partial and
//! full refunds with credit notes, the ledger check and the event feed; 20 concurrent checkouts
//! under one key; catalog SIGKILLed inside a checkout's reservation; billing SIGKILLed between
//! charge and commit and restarted; a hold that expired before the charge settled; paging, the
//! event cursor and key pruning; and one checkout traced across the three processes into a real
//! OTLP receiver.

#![allow(
    clippy::expect_used,
    reason = "end-to-end tests: a failed expectation is a failed test, with its message"
)]

use std::time::Duration;

use backbone_common::{db::Database, db_run};
use backbone_proto::{
    auth as auth_pb,
    billing::{self as pb, billing_service_client::BillingServiceClient},
};
use backbone_tests::{
    Backend, InProcess, Mode, Process, Running, Svc, TestDb,
    auth_support::{AuthClient, bearer, reason, violated_fields},
    catalog_support::{Stack, create, eur, product, stock, stock_up},
    on_both_backends, open_database, wait_ready,
};
use diesel::{ExpressionMethods as _, QueryDsl as _};
use diesel_async::RunQueryDsl as _;
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt as _;

type Billing = BillingServiceClient<Channel>;

/// Billing started against a stack's auth and catalog with its own service account, in the
/// test process or as a real process (as the stack runs), restartable on its database.
struct BillingService {
    running: Running,
    db_url: String,
    args: Vec<String>,
    mode: Mode,
}

impl BillingService {
    /// Starts billing on `db` with extra flags; returns it with a client.
    async fn start(stack: &Stack, db: &TestDb, extra: &[&str]) -> (Self, Billing) {
        let mut auth = AuthClient::new(stack.auth.channel().await);
        let created = auth
            .create_service_account(bearer(
                auth_pb::CreateServiceAccountRequest {
                    display_name: "billing".into(),
                },
                &stack.admin,
            ))
            .await
            .expect("service account")
            .into_inner();
        let client_id = created.service_account.expect("account").id;
        let mut args = vec![
            "--auth-url".to_owned(),
            stack.auth.url(),
            "--catalog-url".into(),
            stack.catalog.url(),
            "--service-client-id".into(),
            client_id,
            // `=`: a generated secret may start with '-'.
            format!("--service-client-secret={}", created.client_secret),
        ];
        // Quick recovery for tests, unless `extra` sets its own.
        for (flag, value) in [
            ("--recovery-interval", "100ms"),
            ("--recovery-delay", "200ms"),
            ("--saga-lease", "2s"),
        ] {
            if !extra.contains(&flag) {
                args.extend([flag.to_owned(), value.to_owned()]);
            }
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let running = launch(&stack.mode, &db.url, &args).await;
        let client = Billing::new(running.channel().await);
        let service = Self {
            running,
            db_url: db.url.clone(),
            args,
            mode: stack.mode.clone(),
        };
        (service, client)
    }

    /// A rolling restart: a fresh instance on the same database, then the old one stopped.
    async fn bounce(&mut self) -> Billing {
        let fresh = launch(&self.mode, &self.db_url, &self.args).await;
        std::mem::replace(&mut self.running, fresh).stop().await;
        Billing::new(self.running.channel().await)
    }

    /// Starts it again on its database (after a kill); returns a client.
    async fn restart(&mut self) -> Billing {
        self.running = launch(&self.mode, &self.db_url, &self.args).await;
        Billing::new(self.running.channel().await)
    }
}

/// Starts billing and waits until it is SERVING.
async fn launch(mode: &Mode, db_url: &str, args: &[String]) -> Running {
    let running = match mode {
        Mode::InProcess => {
            let mut all = vec![
                "backbone-billing".to_owned(),
                "--database-url".into(),
                db_url.to_owned(),
            ];
            all.extend(args.iter().cloned());
            let cli: backbone_billing::config::Cli =
                backbone_common::config::try_parse_from("BILLING", all)
                    .expect("billing flags parse");
            let config = cli.config;
            Running::InProcess(
                InProcess::launch(|listener, shutdown| {
                    backbone_billing::run(config, listener, shutdown)
                })
                .await,
            )
        }
        Mode::Processes(_) => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Running::Process(Process::start_with_env(
                Svc::Billing,
                db_url,
                &args,
                &mode.env(),
            ))
        }
    };
    wait_ready(&running.channel().await, Svc::Billing.grpc_name()).await;
    running
}

/// Billing's own books, read straight from its database: what the test gateway took and which
/// orders stand how, whatever the API says.
async fn books(database: &Database) -> (i64, Vec<(String, String, String)>) {
    use backbone_billing::db::schema::{orders, test_gateway_charges as charges};
    let mut conn = database.conn().await.expect("billing database");
    let charged: i64 = db_run!(&mut conn, |c| {
        charges::table
            .filter(charges::outcome.eq("SUCCEEDED"))
            .count()
            .get_result(c)
            .await
    })
    .expect("count charges");
    let orders: Vec<(String, String, String)> = db_run!(&mut conn, |c| {
        orders::table
            .order(orders::created_at)
            .select((orders::id, orders::status, orders::stock_state))
            .load(c)
            .await
    })
    .expect("orders");
    (charged, orders)
}

/// Checks the ledger as the admin: consistent, with this many entries.
async fn ledger_is_clean(client: &mut Billing, admin: &str) -> pb::CheckLedgerResponse {
    let check = client
        .check_ledger(bearer(pb::CheckLedgerRequest {}, admin))
        .await
        .expect("check ledger")
        .into_inner();
    assert!(check.consistent, "{check:?}");
    check
}

fn checkout(key: &str, token: &str, items: &[(&str, i64)]) -> pb::CheckoutRequest {
    pb::CheckoutRequest {
        request_id: key.into(),
        payment_method_token: token.into(),
        items: items
            .iter()
            .map(|(id, q)| pb::CheckoutItem {
                product_id: (*id).into(),
                quantity: *q,
            })
            .collect(),
    }
}

/// Polls catalog until a product's stock is (on hand, reserved).
async fn stock_becomes(stack: &mut Stack, product_id: &str, wanted: (i64, i64)) {
    let mut level = (0, 0);
    for _ in 0..100 {
        let stock = stock(stack, product_id).await;
        level = (stock.on_hand, stock.reserved);
        if level == wanted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("stock of {product_id} stayed at {level:?}, not {wanted:?}");
}

/// Polls GetOrder until the order leaves PAYMENT_PENDING (the recovery worker settles it).
async fn settled(client: &mut Billing, token: &str, order_id: &str) -> pb::Order {
    for _ in 0..100 {
        let order = client
            .get_order(bearer(
                pb::GetOrderRequest {
                    order_id: order_id.into(),
                },
                token,
            ))
            .await
            .expect("get order")
            .into_inner()
            .order
            .expect("order");
        if order.status != pb::OrderStatus::PaymentPending as i32 {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("order {order_id} was never settled");
}

on_both_backends! {
    async fn checkout_pays_declines_recovers_and_refunds_with_a_clean_ledger(backend: Backend) {
        let mut stack = Stack::start(backend, &[]).await;
        let billing_db = TestDb::new(backend).await;
        let (billing, mut client) = BillingService::start(&stack, &billing_db, &["--gateway-timeout", "1s"]).await;
        let (customer, admin) = (stack.customer.clone(), stack.admin.clone());
        let shirt = create(&mut stack, product("SHIRT-1", "Shirt", eur(2_500))).await;
        stock_up(&mut stack, &shirt.id, 10).await;

        // The cart, priced from the catalog.
        let cart = client.add_cart_item(bearer(pb::AddCartItemRequest { request_id: "add-shirt-1".into(), product_id: shirt.id.clone(), quantity: 2 }, &customer)).await.expect("add").into_inner().cart.expect("cart");
        assert_eq!(cart.lines.len(), 1);
        assert_eq!(cart.lines[0].status, pb::CartLineStatus::Ok as i32);
        assert_eq!(cart.subtotals, vec![eur(5_000)]);
        // The same key again changes nothing; with another request it is refused.
        let again = client.add_cart_item(bearer(pb::AddCartItemRequest { request_id: "add-shirt-1".into(), product_id: shirt.id.clone(), quantity: 2 }, &customer)).await.expect("replay").into_inner().cart.expect("cart");
        assert_eq!(again.lines[0].quantity, 2);
        let reused = client.add_cart_item(bearer(pb::AddCartItemRequest { request_id: "add-shirt-1".into(), product_id: shirt.id.clone(), quantity: 3 }, &customer)).await.expect_err("reused");
        assert_eq!((reused.code(), reason(&reused).as_str()), (Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED"));
        // A line holds at most 1,000: refused, the cart untouched, and the refusal kept under its key
        // (the same request again gets it from there).
        let too_many = |quantity| bearer(pb::AddCartItemRequest { request_id: "add-shirt-2".into(), product_id: shirt.id.clone(), quantity }, &customer);
        let full = client.add_cart_item(too_many(999)).await.expect_err("over the line limit");
        assert_eq!((full.code(), reason(&full).as_str()), (Code::FailedPrecondition, "CART_LIMIT_EXCEEDED"));
        let cart = client.get_cart(bearer(pb::GetCartRequest {}, &customer)).await.expect("cart").into_inner().cart.expect("cart");
        assert_eq!(cart.lines.iter().map(|l| l.quantity).collect::<Vec<_>>(), vec![2]);
        let refused_again = client.add_cart_item(too_many(999)).await.expect_err("stored refusal");
        assert_eq!(reason(&refused_again), "CART_LIMIT_EXCEEDED");
        let unknown = client.add_cart_item(bearer(pb::AddCartItemRequest { request_id: String::new(), product_id: "nope".into(), quantity: 1 }, &customer)).await.expect_err("unknown");
        assert_eq!(unknown.code(), Code::NotFound);
        let bad = client.add_cart_item(bearer(pb::AddCartItemRequest { request_id: String::new(), product_id: String::new(), quantity: 0 }, &customer)).await.expect_err("bad");
        assert_eq!(violated_fields(&bad), vec!["product_id", "quantity"]);

        // Paid from the cart: stock committed, cart cleared, invoice numbered.
        let paid = client.checkout(bearer(checkout("checkout-0001", "tok_visa", &[]), &customer)).await.expect("checkout").into_inner();
        let order = paid.order.clone().expect("order");
        assert_eq!(order.status, pb::OrderStatus::Paid as i32);
        assert_eq!(order.total, Some(eur(5_000)));
        let invoice = paid.invoice.clone().expect("invoice");
        assert_eq!((invoice.status, invoice.number.as_str()), (pb::InvoiceStatus::Paid as i32, "INV-000001"));
        assert_eq!(paid.payment.clone().expect("payment").status, pb::PaymentStatus::Succeeded as i32);
        let level = stock(&mut stack, &shirt.id).await;
        assert_eq!((level.on_hand, level.reserved), (8, 0));
        let cart = client.get_cart(bearer(pb::GetCartRequest {}, &customer)).await.expect("cart").into_inner().cart.expect("cart");
        assert!(cart.lines.is_empty());
        // A retry with the key answers the same and charges nothing more.
        let replay = client.checkout(bearer(checkout("checkout-0001", "tok_visa", &[]), &customer)).await.expect("replay").into_inner();
        assert_eq!(replay, paid);
        let empty = client.checkout(bearer(checkout("checkout-0002", "tok_visa", &[]), &customer)).await.expect_err("empty cart");
        assert_eq!(reason(&empty), "CART_EMPTY");

        // Declined: FAILED_PRECONDITION naming the order; the stock comes back.
        let declined = client.checkout(bearer(checkout("checkout-0003", "tok_chargeDeclined", &[(&shirt.id, 1)]), &customer)).await.expect_err("declined");
        assert_eq!((declined.code(), reason(&declined).as_str()), (Code::FailedPrecondition, "CARD_DECLINED"));
        let failed_id = declined.get_error_details().error_info().expect("info").metadata.get("order_id").cloned().expect("order id");
        let failed = settled(&mut client, &customer, &failed_id).await;
        assert_eq!((failed.status, failed.status_reason.as_str()), (pb::OrderStatus::PaymentFailed as i32, "CARD_DECLINED"));
        assert_eq!(stock(&mut stack, &shirt.id).await.reserved, 0);

        // Not enough stock: nothing charged.
        let short = client.checkout(bearer(checkout("checkout-0004", "tok_visa", &[(&shirt.id, 50)]), &customer)).await.expect_err("short");
        assert_eq!((short.code(), reason(&short).as_str()), (Code::FailedPrecondition, "INSUFFICIENT_STOCK"));
        assert_eq!(short.get_error_details().precondition_failure().expect("failure").violations[0].subject, shirt.id);

        // Timeout after the charge was taken: PAYMENT_PENDING, then PAID by the worker.
        let pending = client.checkout(bearer(checkout("checkout-0005", "tok_timeout", &[(&shirt.id, 1)]), &customer)).await.expect("timeout").into_inner();
        let pending_order = pending.order.expect("order");
        assert_eq!(pending_order.status, pb::OrderStatus::PaymentPending as i32);
        assert_eq!(settled(&mut client, &customer, &pending_order.id).await.status, pb::OrderStatus::Paid as i32);
        // A processing error: PAYMENT_PENDING, then PAYMENT_FAILED by the worker, stock back.
        let erred = client.checkout(bearer(checkout("checkout-0006", "tok_processing_error", &[(&shirt.id, 1)]), &customer)).await.expect("processing").into_inner();
        let erred_order = settled(&mut client, &customer, &erred.order.expect("order").id).await;
        assert_eq!((erred_order.status, erred_order.status_reason.as_str()), (pb::OrderStatus::PaymentFailed as i32, "PAYMENT_PROCESSING_ERROR"));
        // The worker releases the stock right after it marks the order failed.
        stock_becomes(&mut stack, &shirt.id, (7, 0)).await;

        // Cancel: a failed order can be cancelled, a paid one cannot.
        let cancelled = client.cancel_order(bearer(pb::CancelOrderRequest { request_id: String::new(), order_id: failed_id.clone() }, &customer)).await.expect("cancel").into_inner().order.expect("order");
        assert_eq!(cancelled.status, pb::OrderStatus::Cancelled as i32);
        let not = client.cancel_order(bearer(pb::CancelOrderRequest { request_id: String::new(), order_id: order.id.clone() }, &customer)).await.expect_err("paid");
        assert_eq!(reason(&not), "ORDER_NOT_CANCELLABLE");

        // Refunds (admin): part, too much, the rest.
        let part = client.refund_payment(bearer(pb::RefundPaymentRequest { request_id: "refund-0001".into(), order_id: order.id.clone(), amount: Some(eur(1_000)), reason: "damaged".into() }, &admin)).await.expect("partial").into_inner();
        assert_eq!(part.order.expect("order").status, pb::OrderStatus::PartiallyRefunded as i32);
        assert_eq!(part.credit_note.expect("note").number, "CN-000001");
        let too_much = client.refund_payment(bearer(pb::RefundPaymentRequest { request_id: "refund-0002".into(), order_id: order.id.clone(), amount: Some(eur(9_000)), reason: String::new() }, &admin)).await.expect_err("too much");
        assert_eq!(reason(&too_much), "REFUND_EXCEEDS_REMAINING");
        let by_customer = client.refund_payment(bearer(pb::RefundPaymentRequest { request_id: "refund-0003".into(), order_id: order.id.clone(), amount: None, reason: String::new() }, &customer)).await.expect_err("customer");
        assert_eq!(by_customer.code(), Code::PermissionDenied);
        let rest = client.refund_payment(bearer(pb::RefundPaymentRequest { request_id: "refund-0004".into(), order_id: order.id.clone(), amount: None, reason: String::new() }, &admin)).await.expect("rest").into_inner();
        assert_eq!(rest.order.expect("order").refunded_amount, Some(eur(5_000)));
        let invoice = rest.invoice.expect("invoice");
        assert_eq!((invoice.status, invoice.credit_notes.len()), (pb::InvoiceStatus::Refunded as i32, 2));

        // The ledger balances, and the feed tells the story in order.
        let check = ledger_is_clean(&mut client, &admin).await;
        assert_eq!(check.entry_count, 4 + 4 + 2 + 2);
        let entries = client.get_ledger(bearer(pb::GetLedgerRequest { order_id: order.id.clone(), ..Default::default() }, &admin)).await.expect("ledger").into_inner().entries;
        assert_eq!(entries.len(), 8);
        let feed = client.list_events(bearer(pb::ListEventsRequest { page_size: 100, subject_id: order.id.clone(), ..Default::default() }, &admin)).await.expect("events").into_inner();
        let types: Vec<&str> = feed.events.iter().map(|e| e.r#type.as_str()).collect();
        assert_eq!(types, ["order.created", "order.payment_pending", "order.paid", "order.partially_refunded", "order.refunded"]);
        assert!(feed.events.windows(2).all(|w| w[0].sequence < w[1].sequence));
        let paid_event = &feed.events[2];
        let status = paid_event.payload.as_ref().and_then(|p| p.fields.get("status")).and_then(|v| v.kind.clone());
        assert_eq!(status, Some(backbone_proto::pbjson_types::value::Kind::StringValue("ORDER_STATUS_PAID".into())));
        let denied = client.list_events(bearer(pb::ListEventsRequest::default(), &customer)).await.expect_err("customer");
        assert_eq!(denied.code(), Code::PermissionDenied);

        billing.running.stop().await;
        stack.stop().await;
    }
}

/// AddCartItem under `key`.
fn add_to_cart(key: &str, product_id: &str, quantity: i64) -> pb::AddCartItemRequest {
    pb::AddCartItemRequest {
        request_id: key.into(),
        product_id: product_id.into(),
        quantity,
    }
}

/// Every order as the admin sees it.
async fn all_orders(client: &mut Billing, admin: &str) -> Vec<pb::Order> {
    client
        .list_orders(bearer(
            pb::ListOrdersRequest {
                page_size: 100,
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("list orders")
        .into_inner()
        .orders
}

on_both_backends! {
    async fn twenty_concurrent_checkouts_under_one_key_make_one_order_and_one_charge(backend: Backend) {
        let mut stack = Stack::start(backend, &[]).await;
        let billing_db = TestDb::new(backend).await;
        let (billing, mut client) = BillingService::start(&stack, &billing_db, &[]).await;
        let books_db = open_database(&billing_db.url, backbone_billing::MIGRATIONS).await;
        let (customer, admin) = (stack.customer.clone(), stack.admin.clone());
        let mug = create(&mut stack, product("MUG-20", "Mug", eur(1_200))).await;
        let lamp = create(&mut stack, product("LAMP-20", "Lamp", eur(3_000))).await;
        stock_up(&mut stack, &mug.id, 5).await;
        stock_up(&mut stack, &lamp.id, 5).await;
        client.add_cart_item(bearer(add_to_cart("add-mug-0001", &mug.id, 2), &customer)).await.expect("add mug");

        // The cart checked out 20 times at once under one key, each on its own connection.
        let mut calls = Vec::new();
        for _ in 0..20 {
            let mut own = Billing::new(billing.running.channel().await);
            let token = customer.clone();
            calls.push(tokio::spawn(async move {
                own.checkout(bearer(checkout("checkout-twenty-1", "tok_visa", &[]), &token)).await.map(tonic::Response::into_inner)
            }));
        }
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.expect("task").expect("every repeat gets the answer"));
        }
        let first = answers[0].clone();
        assert!(answers.iter().all(|a| *a == first), "20 identical answers");
        let order = first.order.expect("order");
        assert_eq!((order.status, order.total), (pb::OrderStatus::Paid as i32, Some(eur(2_400))));
        // One order, one charge at the gateway, the stock taken once.
        let (charged, orders) = books(&books_db).await;
        assert_eq!((charged, orders.len()), (1, 1));
        let level = stock(&mut stack, &mug.id).await;
        assert_eq!((level.on_hand, level.reserved), (3, 0));

        // The same key with other items: refused, and nothing more is made or charged.
        let reused = client.checkout(bearer(checkout("checkout-twenty-1", "tok_visa", &[(&lamp.id, 1)]), &customer)).await.expect_err("another cart");
        assert_eq!((reused.code(), reason(&reused).as_str()), (Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED"));
        // The same request under the key, later: the stored answer.
        let later = client.checkout(bearer(checkout("checkout-twenty-1", "tok_visa", &[]), &customer)).await.expect("replay").into_inner();
        assert_eq!(later.order.expect("order").id, order.id);
        assert_eq!(books(&books_db).await.0, 1);
        assert_eq!(all_orders(&mut client, &admin).await.len(), 1);
        assert_eq!(stock(&mut stack, &lamp.id).await.reserved, 0);
        ledger_is_clean(&mut client, &admin).await;

        billing.running.stop().await;
        stack.stop().await;
    }
}

/// Holds the write lock on a product's stock row in catalog's database (a transaction left
/// open), so a ReserveStock for it waits inside catalog until the lock goes.
struct StockLock {
    conn: backbone_common::db::DbConn,
    _database: Database,
}

impl StockLock {
    async fn take(db: &TestDb, product_id: &str) -> Self {
        use diesel_async::SimpleAsyncConnection as _;
        let database = open_database(&db.url, backbone_catalog::MIGRATIONS).await;
        let mut conn = database.conn().await.expect("connection");
        let sql = format!(
            "BEGIN; UPDATE stock SET reserved = reserved WHERE product_id = '{product_id}';"
        );
        db_run!(&mut conn, |c| c.batch_execute(&sql).await).expect("lock the stock row");
        Self {
            conn,
            _database: database,
        }
    }

    async fn release(mut self) {
        use diesel_async::SimpleAsyncConnection as _;
        db_run!(&mut self.conn, |c| c.batch_execute("ROLLBACK").await).expect("unlock");
    }
}

/// Polls billing's orders until one stands in `status`.
async fn order_in(db: &Database, status: &str) -> String {
    for _ in 0..200 {
        if let Some((id, _, _)) = books(db).await.1.into_iter().find(|(_, s, _)| s == status) {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no order reached {status}");
}

on_both_backends! {
    async fn catalog_killed_during_checkout_means_unavailable_no_charge_and_no_stock_held(backend: Backend) {
        let mut stack = Stack::start_in(backend, &[], Mode::Processes(Vec::new())).await;
        let billing_db = TestDb::new(backend).await;
        let (billing, mut client) = BillingService::start(&stack, &billing_db, &[]).await;
        let books_db = open_database(&billing_db.url, backbone_billing::MIGRATIONS).await;
        let (customer, admin) = (stack.customer.clone(), stack.admin.clone());
        let shirt = create(&mut stack, product("SHIRT-OUT", "Shirt", eur(2_500))).await.id;
        stock_up(&mut stack, &shirt, 10).await;

        // The checkout is inside catalog's ReserveStock (waiting on the row) when catalog dies.
        let lock = StockLock::take(&stack.catalog_db, &shirt).await;
        let (mut own, token, item) = (client.clone(), customer.clone(), shirt.clone());
        let pending = tokio::spawn(async move {
            own.checkout(bearer(checkout("checkout-outage-1", "tok_visa", &[(&item, 2)]), &token)).await
        });
        let order_id = order_in(&books_db, "PENDING").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stack.kill_catalog();
        lock.release().await;
        let failed = pending.await.expect("task").expect_err("catalog died");
        assert_eq!((failed.code(), reason(&failed).as_str()), (Code::Unavailable, "CATALOG_UNAVAILABLE"), "{failed:?}");
        // While catalog is down: refused at the price snapshot, nothing made.
        let down = client.checkout(bearer(checkout("checkout-outage-2", "tok_visa", &[(&shirt, 1)]), &customer)).await.expect_err("catalog down");
        assert_eq!(down.code(), Code::Unavailable);
        let (charged, orders) = books(&books_db).await;
        assert_eq!(charged, 0, "nothing was charged");
        assert_eq!(orders.len(), 1);
        assert_eq!((orders[0].0.as_str(), orders[0].1.as_str()), (order_id.as_str(), "CANCELLED"));

        // Catalog back: the worker releases whatever it may hold for the order; nothing stays
        // reserved.
        stack.restart_catalog().await;
        let mut released = false;
        for _ in 0..100 {
            let level = stock(&mut stack, &shirt).await;
            let (_, orders) = books(&books_db).await;
            if level.reserved == 0 && orders[0].2 == "RELEASED" {
                assert_eq!(level.on_hand, 10);
                released = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(released, "the order's stock was released once catalog came back");
        // The key was freed: the same request now goes through, once.
        let paid = client.checkout(bearer(checkout("checkout-outage-1", "tok_visa", &[(&shirt, 2)]), &customer)).await.expect("retry").into_inner();
        assert_eq!(paid.order.expect("order").status, pb::OrderStatus::Paid as i32);
        let (charged, orders) = books(&books_db).await;
        assert_eq!(charged, 1);
        assert!(orders.iter().filter(|o| o.1 == "PAID").all(|o| o.2 == "COMMITTED"));
        let level = stock(&mut stack, &shirt).await;
        assert_eq!((level.on_hand, level.reserved), (8, 0));
        assert_eq!(all_orders(&mut client, &admin).await.len(), 2);
        ledger_is_clean(&mut client, &admin).await;

        billing.running.stop().await;
        stack.stop().await;
    }
}

on_both_backends! {
    async fn billing_killed_between_charge_and_commit_is_completed_by_the_worker_after_restart(backend: Backend) {
        let mut stack = Stack::start_in(backend, &[], Mode::Processes(Vec::new())).await;
        let billing_db = TestDb::new(backend).await;
        // tok_timeout: the gateway takes the charge and never answers; a long gateway timeout
        // keeps billing waiting between charge and commit, where it is killed.
        let (mut billing, client) = BillingService::start(&stack, &billing_db, &["--gateway-timeout", "60s"]).await;
        let books_db = open_database(&billing_db.url, backbone_billing::MIGRATIONS).await;
        let (customer, admin) = (stack.customer.clone(), stack.admin.clone());
        let shirt = create(&mut stack, product("SHIRT-KILL", "Shirt", eur(2_500))).await.id;
        stock_up(&mut stack, &shirt, 10).await;

        let (mut own, token, item) = (client.clone(), customer.clone(), shirt.clone());
        let pending = tokio::spawn(async move {
            own.checkout(bearer(checkout("checkout-crash-1", "tok_timeout", &[(&item, 1)]), &token)).await
        });
        for _ in 0..200 {
            if books(&books_db).await.0 == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let (charged, orders) = books(&books_db).await;
        assert_eq!(charged, 1, "the gateway took the charge");
        billing.running.process().kill();
        assert!(pending.await.expect("task").is_err(), "the caller lost its answer");
        // What the crash left: the money taken, the order PAYMENT_PENDING, the stock held.
        assert_eq!((orders[0].1.as_str(), orders[0].2.as_str()), ("PAYMENT_PENDING", "HELD"));
        assert_eq!(stock(&mut stack, &shirt).await.reserved, 1);

        // Restarted: the worker finds the charge by the payment's idempotency key and completes.
        let mut client = billing.restart().await;
        let order = settled(&mut client, &customer, &orders[0].0).await;
        assert_eq!(order.status, pb::OrderStatus::Paid as i32);
        let level = stock(&mut stack, &shirt).await;
        assert_eq!((level.on_hand, level.reserved), (9, 0));
        assert_eq!(books(&books_db).await.0, 1, "charged once");
        let check = ledger_is_clean(&mut client, &admin).await;
        assert_eq!(check.entry_count, 4);
        // The customer's retry under the key (its lease long gone) answers with the paid order.
        let retry = client.checkout(bearer(checkout("checkout-crash-1", "tok_timeout", &[(&shirt, 1)]), &customer)).await.expect("retry").into_inner();
        let retried = retry.order.expect("order");
        assert_eq!((retried.id.as_str(), retried.status), (order.id.as_str(), pb::OrderStatus::Paid as i32));
        assert_eq!(books(&books_db).await.0, 1);

        billing.running.stop().await;
        stack.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_checkout_is_one_trace_across_billing_catalog_and_auth() {
    use backbone_tests::otlp_support::OtlpReceiver;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

    let receiver = OtlpReceiver::start().await;
    let mut stack = Stack::start_in(Backend::Sqlite, &[], Mode::Processes(receiver.env())).await;
    let billing_db = TestDb::new(Backend::Sqlite).await;
    let (billing, mut client) = BillingService::start(&stack, &billing_db, &[]).await;
    let customer = stack.customer.clone();
    let shirt = create(&mut stack, product("SHIRT-TRACE", "Shirt", eur(2_500)))
        .await
        .id;
    stock_up(&mut stack, &shirt, 10).await;

    // The checkout continues the caller's trace (W3C traceparent).
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = "00f067aa0ba902b7";
    let mut request = bearer(
        checkout("checkout-trace-1", "tok_visa", &[(&shirt, 1)]),
        &customer,
    );
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01")
            .parse()
            .expect("header"),
    );
    let paid = client
        .checkout(request)
        .await
        .expect("checkout")
        .into_inner();
    assert_eq!(
        paid.order.expect("order").status,
        pb::OrderStatus::Paid as i32
    );
    // A caller's mistake: its status code is on the span, which is not an error span.
    let mut missing = bearer(
        pb::GetOrderRequest {
            order_id: uuid::Uuid::new_v4().to_string(),
        },
        &customer,
    );
    missing.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01")
            .parse()
            .expect("header"),
    );
    let refused = client.get_order(missing).await.expect_err("no such order");

    // SIGTERM flushes each process's exporter.
    billing.running.stop().await;
    stack.stop().await;
    let spans: Vec<_> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();
    let find = |service: &str, kind: SpanKind, name: &str| {
        spans
            .iter()
            .filter(|s| s.service == service && s.kind == kind && s.name == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    let checkout_span = find(
        "backbone-billing",
        SpanKind::Server,
        "backbone.billing.v1.BillingService/Checkout",
    );
    assert_eq!(
        checkout_span.len(),
        1,
        "billing's server span, in the caller's trace: {spans:#?}"
    );
    assert_eq!(checkout_span[0].parent_span_id, caller_span);
    // The RPC attributes of the OpenTelemetry conventions, the status code of the answer, and
    // no error status for a call that succeeded.
    let attribute = |key: &str| checkout_span[0].attributes.get(key).map(String::as_str);
    assert_eq!(attribute("rpc.system"), Some("grpc"), "{checkout_span:#?}");
    assert_eq!(
        attribute("rpc.service"),
        Some("backbone.billing.v1.BillingService")
    );
    assert_eq!(attribute("rpc.method"), Some("Checkout"));
    assert_eq!(
        attribute("rpc.grpc.status_code"),
        Some("0"),
        "{checkout_span:#?}"
    );
    assert!(!checkout_span[0].error, "{checkout_span:#?}");
    let get_order = find(
        "backbone-billing",
        SpanKind::Server,
        "backbone.billing.v1.BillingService/GetOrder",
    );
    assert_eq!(get_order.len(), 1, "{spans:#?}");
    assert_eq!(
        get_order[0].attributes.get("rpc.grpc.status_code"),
        Some(&(refused.code() as i32).to_string()),
        "{get_order:#?}"
    );
    assert_ne!(refused.code(), tonic::Code::Ok);
    assert!(
        !get_order[0].error,
        "a caller's mistake is no span error: {get_order:#?}"
    );
    // Each call billing made is a CLIENT span of billing whose SERVER span at the peer is its
    // child: catalog for prices, the reservation and its commit; auth for billing's token.
    for (service, name) in [
        (
            "backbone-catalog",
            "backbone.catalog.v1.CatalogService/BatchGetProducts",
        ),
        (
            "backbone-catalog",
            "backbone.catalog.v1.CatalogService/ReserveStock",
        ),
        (
            "backbone-catalog",
            "backbone.catalog.v1.CatalogService/CommitReservation",
        ),
        (
            "backbone-auth",
            "backbone.auth.v1.AuthService/IssueServiceToken",
        ),
    ] {
        let servers = find(service, SpanKind::Server, name);
        assert!(
            !servers.is_empty(),
            "{service} has a server span {name}: {spans:#?}"
        );
        let clients = find("backbone-billing", SpanKind::Client, name);
        for server in &servers {
            assert!(
                clients.iter().any(|c| c.span_id == server.parent_span_id),
                "{service}'s {name} is a child of billing's client span: {spans:#?}"
            );
        }
    }
}

on_both_backends! {
    async fn a_charge_whose_reservation_expired_meanwhile_is_refunded_in_full(backend: Backend) {
        use backbone_billing::db::schema::test_gateway_charges as charges;
        let mut stack = Stack::start(backend, &[]).await;
        let billing_db = TestDb::new(backend).await;
        // The charge's answer is lost (tok_timeout), and catalog's 1 s hold runs out before the
        // worker looks again (2 s).
        let flags = ["--gateway-timeout", "500ms", "--reservation-ttl", "1s", "--recovery-delay", "2s"];
        let (billing, mut client) = BillingService::start(&stack, &billing_db, &flags).await;
        let (customer, admin) = (stack.customer.clone(), stack.admin.clone());
        let shirt = create(&mut stack, product("SHIRT-EXP", "Shirt", eur(2_500))).await.id;
        stock_up(&mut stack, &shirt, 10).await;

        let pending = client.checkout(bearer(checkout("checkout-expiry-1", "tok_timeout", &[(&shirt, 3)]), &customer)).await.expect("checkout").into_inner();
        let order = settled(&mut client, &customer, &pending.order.expect("order").id).await;
        assert_eq!((order.status, order.status_reason.as_str()), (pb::OrderStatus::PaymentFailed as i32, "RESERVATION_EXPIRED"));
        // The money went back in full, the stock was never taken, the books balance.
        let books_db = open_database(&billing_db.url, backbone_billing::MIGRATIONS).await;
        let mut conn = books_db.conn().await.expect("billing database");
        let (amount, refunded): (i64, i64) = db_run!(&mut conn, |c| {
            charges::table.select((charges::amount_minor, charges::refunded_minor)).first(c).await
        })
        .expect("the charge");
        assert_eq!((amount, refunded), (7_500, 7_500));
        stock_becomes(&mut stack, &shirt, (10, 0)).await;
        let payment = client.get_order(bearer(pb::GetOrderRequest { order_id: order.id.clone() }, &customer)).await.expect("order").into_inner();
        assert_eq!(payment.order.expect("order").status, pb::OrderStatus::PaymentFailed as i32);
        ledger_is_clean(&mut client, &admin).await;

        billing.running.stop().await;
        stack.stop().await;
    }
}

/// Every event from the start of the feed (or `cursor`), following the cursor to the end;
/// returns them with the cursor to poll from next.
async fn follow(client: &mut Billing, admin: &str, mut cursor: String) -> (Vec<pb::Event>, String) {
    let mut events = Vec::new();
    loop {
        let page = client
            .list_events(bearer(
                pb::ListEventsRequest {
                    page_size: 5,
                    page_token: cursor.clone(),
                    ..Default::default()
                },
                admin,
            ))
            .await
            .expect("events")
            .into_inner();
        cursor = page.next_page_token;
        if page.events.is_empty() {
            return (events, cursor);
        }
        events.extend(page.events);
    }
}

on_both_backends! {
    async fn cart_lines_report_their_own_trouble_and_orders_invoices_and_events_page(backend: Backend) {
        let mut stack = Stack::start(backend, &[]).await;
        let billing_db = TestDb::new(backend).await;
        let (mut billing, mut client) = BillingService::start(&stack, &billing_db, &[]).await;
        let (customer, admin) = (stack.customer.clone(), stack.admin.clone());
        let pen = create(&mut stack, product("PEN-1", "Pen", eur(300))).await.id;
        let book = create(&mut stack, product("BOOK-1", "Book", eur(4_000))).await.id;
        let mug = create(&mut stack, product("MUG-P", "Mug", eur(1_000))).await.id;
        stock_up(&mut stack, &pen, 1).await;
        stock_up(&mut stack, &book, 5).await;
        stock_up(&mut stack, &mug, 10).await;

        // Trouble is reported per line; the cart itself still answers.
        client.add_cart_item(bearer(add_to_cart("add-pen-0001", &pen, 3), &customer)).await.expect("pen");
        client.add_cart_item(bearer(add_to_cart("add-book-0001", &book, 1), &customer)).await.expect("book");
        stack.client.archive_product(bearer(backbone_proto::catalog::ArchiveProductRequest { product_id: book.clone(), etag: String::new() }, &admin)).await.expect("archive");
        let cart = client.get_cart(bearer(pb::GetCartRequest {}, &customer)).await.expect("cart").into_inner().cart.expect("cart");
        let status = |id: &str| cart.lines.iter().find(|l| l.product_id == id).map(|l| (l.status, l.available_quantity));
        assert_eq!(status(&pen), Some((pb::CartLineStatus::InsufficientStock as i32, 1)));
        assert_eq!(status(&book).map(|s| s.0), Some(pb::CartLineStatus::ProductNotAvailable as i32));
        let refused = client.checkout(bearer(checkout("checkout-page-01", "tok_visa", &[]), &customer)).await.expect_err("archived book");
        assert_eq!(reason(&refused), "PRODUCT_NOT_AVAILABLE");
        // Mended: the book out, one pen; the key sent as metadata this time.
        client.remove_cart_item(bearer(pb::RemoveCartItemRequest { request_id: String::new(), product_id: book.clone() }, &customer)).await.expect("remove");
        client.update_cart_item(bearer(pb::UpdateCartItemRequest { request_id: String::new(), product_id: pen.clone(), quantity: 1 }, &customer)).await.expect("update");
        let mut request = bearer(checkout("", "tok_visa", &[]), &customer);
        request.metadata_mut().insert("idempotency-key", "checkout-page-02".parse().expect("key"));
        let paid = client.checkout(request).await.expect("checkout").into_inner();
        assert_eq!(paid.order.expect("order").total, Some(eur(300)));
        for n in 3..=5 {
            client.checkout(bearer(checkout(&format!("checkout-page-0{n}"), "tok_visa", &[(&mug, 1)]), &customer)).await.expect("mug");
        }

        // Orders, newest first, two to a page; invoices three to a page.
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = client.list_orders(bearer(pb::ListOrdersRequest { page_size: 2, page_token: token.clone(), ..Default::default() }, &customer)).await.expect("orders").into_inner();
            assert!(page.orders.len() <= 2);
            seen.extend(page.orders.into_iter().map(|o| (o.create_time.map(|t| (t.seconds, t.nanos)), o.id)));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        // The four paid orders, each once (the refused checkout stopped before making one).
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0] >= w[1]), "newest first: {seen:?}");
        let paid_only = client.list_orders(bearer(pb::ListOrdersRequest { page_size: 10, status: pb::OrderStatus::Paid as i32, ..Default::default() }, &customer)).await.expect("paid").into_inner();
        assert_eq!(paid_only.orders.len(), 4);
        let first = client.list_invoices(bearer(pb::ListInvoicesRequest { page_size: 3, ..Default::default() }, &customer)).await.expect("invoices").into_inner();
        let rest = client.list_invoices(bearer(pb::ListInvoicesRequest { page_size: 3, page_token: first.next_page_token.clone(), ..Default::default() }, &customer)).await.expect("invoices").into_inner();
        assert_eq!((first.invoices.len(), rest.invoices.len(), rest.next_page_token.as_str()), (3, 1, ""));
        let numbers: Vec<&str> = first.invoices.iter().chain(&rest.invoices).map(|i| i.number.as_str()).collect();
        assert_eq!(numbers, ["INV-000004", "INV-000003", "INV-000002", "INV-000001"]);
        let invoice = client.get_invoice(bearer(pb::GetInvoiceRequest { invoice_id: rest.invoices[0].id.clone() }, &customer)).await.expect("invoice").into_inner().invoice.expect("invoice");
        assert_eq!((invoice.number.as_str(), invoice.total.clone()), ("INV-000001", Some(eur(300))));
        // Someone else's invoice does not exist for them.
        let mut auth = AuthClient::new(stack.auth.channel().await);
        let other = backbone_tests::auth_support::customer(&mut auth, "otto@example.com").await;
        let hidden = client.get_invoice(bearer(pb::GetInvoiceRequest { invoice_id: invoice.id.clone() }, &other)).await.expect_err("not theirs");
        assert_eq!(hidden.code(), Code::NotFound);
        let foreign = client.list_orders(bearer(pb::ListOrdersRequest { customer_id: "someone-else".into(), ..Default::default() }, &other)).await.expect_err("not theirs");
        assert_eq!(foreign.code(), Code::PermissionDenied);

        // The event feed, followed with its cursor: everything once, in order; then only news.
        let (events, cursor) = follow(&mut client, &admin, String::new()).await;
        assert!(events.windows(2).all(|w| w[0].sequence < w[1].sequence));
        assert_eq!(events.iter().filter(|e| e.r#type == "order.paid").count(), 4);
        let again = client.list_events(bearer(pb::ListEventsRequest { page_size: 5, page_token: cursor.clone(), ..Default::default() }, &admin)).await.expect("poll").into_inner();
        assert!(again.events.is_empty());
        client.checkout(bearer(checkout("checkout-page-06", "tok_visa", &[(&mug, 1)]), &customer)).await.expect("one more");
        let (news, _) = follow(&mut client, &admin, cursor).await;
        assert_eq!(news.iter().map(|e| e.r#type.as_str()).next(), Some("order.created"));
        assert_eq!(news.iter().filter(|e| e.r#type == "order.paid").count(), 1);
        assert!(news[0].sequence > events.last().expect("events").sequence);
        let only_paid = client.list_events(bearer(pb::ListEventsRequest { page_size: 100, types: vec!["order.paid".into()], ..Default::default() }, &admin)).await.expect("types").into_inner();
        assert_eq!(only_paid.events.len(), 5);
        let tampered = client.list_events(bearer(pb::ListEventsRequest { page_token: "not-a-cursor".into(), ..Default::default() }, &admin)).await.expect_err("tampered");
        assert_eq!(tampered.code(), Code::InvalidArgument);

        // Keys are kept (24 hours at least), then pruned: a key aged past that is free again.
        let other_request = |key: &str| bearer(add_to_cart(key, &mug, 2), &customer);
        let kept = client.add_cart_item(other_request("add-pen-0001")).await.expect_err("kept");
        assert_eq!(reason(&kept), "IDEMPOTENCY_KEY_REUSED");
        {
            use backbone_billing::db::schema::idempotency_keys as keys;
            let database = open_database(&billing_db.url, backbone_billing::MIGRATIONS).await;
            let mut conn = database.conn().await.expect("billing database");
            let long_ago = chrono::Utc::now().naive_utc() - chrono::TimeDelta::hours(25);
            let aged = db_run!(&mut conn, |c| {
                diesel::update(keys::table.filter(keys::request_key.eq("add-pen-0001"))).set(keys::created_at.eq(long_ago)).execute(c).await
            })
            .expect("age the key");
            assert_eq!(aged, 1);
        }
        // A fresh replica's worker prunes at once (then about once a minute).
        let mut client = billing.bounce().await;
        let mut freed = false;
        for _ in 0..50 {
            if client.add_cart_item(other_request("add-pen-0001")).await.is_ok() {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(freed, "the aged key was pruned");
        let young = client.add_cart_item(other_request("add-book-0001")).await.expect_err("young key");
        assert_eq!(reason(&young), "IDEMPOTENCY_KEY_REUSED");

        billing.running.stop().await;
        stack.stop().await;
    }
}
