//! The billing service end to end with the real auth and catalog services over gRPC, on SQLite
//! and PostgreSQL: carts, the checkout saga with every test-gateway outcome (paid, declined,
//! processing error and timeout settled by the recovery worker), idempotent replays, partial and
//! full refunds with credit notes, the ledger check and the event feed.

#![allow(
    clippy::expect_used,
    reason = "end-to-end tests: a failed expectation is a failed test, with its message"
)]

use std::time::Duration;

use backbone_proto::{
    auth as auth_pb,
    billing::{self as pb, billing_service_client::BillingServiceClient},
};
use backbone_tests::{
    InProcess, Svc, TestDb,
    auth_support::{AuthClient, bearer, reason, violated_fields},
    catalog_support::{Stack, create, eur, product, stock, stock_up},
    on_both_backends, wait_ready,
};
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt as _;

type Billing = BillingServiceClient<Channel>;

/// Starts billing against the stack's auth and catalog with its own service account.
async fn start_billing(stack: &Stack, db: &TestDb) -> (InProcess, Billing) {
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
    let auth_url = format!("http://{}", stack.auth.addr);
    let catalog_url = format!("http://{}", stack.catalog.addr);
    let args = vec![
        "backbone-billing".to_owned(),
        "--database-url".into(),
        db.url.clone(),
        "--auth-url".into(),
        auth_url,
        "--catalog-url".into(),
        catalog_url,
        "--service-client-id".into(),
        client_id,
        // `=`: a generated secret may start with '-'.
        format!("--service-client-secret={}", created.client_secret),
        "--recovery-interval".into(),
        "100ms".into(),
        "--recovery-delay".into(),
        "200ms".into(),
        "--saga-lease".into(),
        "2s".into(),
    ];
    let cli: backbone_billing::config::Cli =
        backbone_common::config::try_parse_from("BILLING", args).expect("billing flags parse");
    let config = cli.config;
    let billing =
        InProcess::launch(|listener, shutdown| backbone_billing::run(config, listener, shutdown))
            .await;
    let channel = billing.channel().await;
    wait_ready(&channel, Svc::Billing.grpc_name()).await;
    (billing, Billing::new(channel))
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
        let (billing, mut client) = start_billing(&stack, &billing_db).await;
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
        let level = stock(&mut stack, &shirt.id).await;
        assert_eq!((level.on_hand, level.reserved), (7, 0));

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
        let check = client.check_ledger(bearer(pb::CheckLedgerRequest {}, &admin)).await.expect("check").into_inner();
        assert!(check.consistent, "{check:?}");
        assert_eq!(check.entry_count, 4 + 4 + 2 + 2);
        let entries = client.get_ledger(bearer(pb::GetLedgerRequest { order_id: order.id.clone(), ..Default::default() }, &admin)).await.expect("ledger").into_inner().entries;
        assert_eq!(entries.len(), 8);
        let feed = client.list_events(bearer(pb::ListEventsRequest { page_size: 100, subject_id: order.id.clone(), ..Default::default() }, &admin)).await.expect("events").into_inner();
        let types: Vec<&str> = feed.events.iter().map(|e| e.r#type.as_str()).collect();
        assert_eq!(types, ["order.created", "order.payment_pending", "order.paid", "order.partially_refunded", "order.refunded"]);
        assert!(feed.events.windows(2).all(|w| w[0].sequence < w[1].sequence));
        let paid_event = &feed.events[2];
        let status = paid_event.payload.as_ref().and_then(|p| p.fields.get("status")).and_then(|v| v.kind.clone());
        assert_eq!(status, Some(prost_types::value::Kind::StringValue("ORDER_STATUS_PAID".into())));
        let denied = client.list_events(bearer(pb::ListEventsRequest::default(), &customer)).await.expect_err("customer");
        assert_eq!(denied.code(), Code::PermissionDenied);

        billing.stop().await.expect("billing stops cleanly");
        stack.stop().await;
    }
}
