//! Diesel schema of the billing database, in types both backends share (Text ids, BigInt money,
//! Timestamp in UTC, Binary for stored answers).

diesel::table! {
    counters (name) {
        name -> Text,
        value -> BigInt,
    }
}

diesel::table! {
    cart_lines (customer_id, product_id) {
        customer_id -> Text,
        product_id -> Text,
        quantity -> BigInt,
        added_at -> Timestamp,
    }
}

diesel::table! {
    carts (customer_id) {
        customer_id -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    idempotency_keys (caller_id, request_key) {
        caller_id -> Text,
        request_key -> Text,
        operation -> Text,
        fingerprint -> Text,
        state -> Text,
        order_id -> Nullable<Text>,
        status_code -> Nullable<Integer>,
        response -> Nullable<Binary>,
        locked_until -> Timestamp,
        created_at -> Timestamp,
    }
}

diesel::table! {
    orders (id) {
        id -> Text,
        customer_id -> Text,
        status -> Text,
        status_reason -> Text,
        currency_code -> Text,
        total_minor -> BigInt,
        refunded_minor -> BigInt,
        stock_state -> Text,
        from_cart -> Bool,
        invoice_id -> Nullable<Text>,
        payment_id -> Nullable<Text>,
        locked_until -> Timestamp,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    order_lines (order_id, position) {
        order_id -> Text,
        position -> Integer,
        product_id -> Text,
        sku -> Text,
        title -> Text,
        quantity -> BigInt,
        unit_price_minor -> BigInt,
        amount_minor -> BigInt,
    }
}

diesel::table! {
    invoices (id) {
        id -> Text,
        number -> Text,
        order_id -> Text,
        customer_id -> Text,
        status -> Text,
        currency_code -> Text,
        total_minor -> BigInt,
        paid_minor -> BigInt,
        refunded_minor -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    payments (id) {
        id -> Text,
        order_id -> Text,
        status -> Text,
        currency_code -> Text,
        amount_minor -> BigInt,
        refunded_minor -> BigInt,
        gateway -> Text,
        gateway_payment_id -> Text,
        method_token -> Text,
        failure_reason -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    refunds (id) {
        id -> Text,
        order_id -> Text,
        payment_id -> Text,
        status -> Text,
        currency_code -> Text,
        amount_minor -> BigInt,
        reason -> Text,
        gateway_refund_id -> Text,
        locked_until -> Timestamp,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    credit_notes (id) {
        id -> Text,
        number -> Text,
        invoice_id -> Text,
        order_id -> Text,
        payment_id -> Text,
        refund_id -> Text,
        currency_code -> Text,
        amount_minor -> BigInt,
        reason -> Text,
        gateway_refund_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    ledger_entries (id) {
        id -> Text,
        transaction_id -> Text,
        account -> Text,
        customer_id -> Text,
        currency_code -> Text,
        amount_minor -> BigInt,
        order_id -> Text,
        payment_id -> Text,
        credit_note_id -> Text,
        description -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    events (id) {
        sequence -> Nullable<BigInt>,
        id -> Text,
        event_type -> Text,
        subject_id -> Text,
        payload -> Text,
        trace_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    test_gateway_charges (idempotency_key) {
        idempotency_key -> Text,
        id -> Text,
        outcome -> Text,
        currency_code -> Text,
        amount_minor -> BigInt,
        refunded_minor -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    test_gateway_refunds (idempotency_key) {
        idempotency_key -> Text,
        id -> Text,
        charge_id -> Text,
        amount_minor -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::joinable!(order_lines -> orders (order_id));
diesel::allow_tables_to_appear_in_same_query!(
    counters,
    cart_lines,
    carts,
    idempotency_keys,
    orders,
    order_lines,
    invoices,
    payments,
    refunds,
    credit_notes,
    ledger_entries,
    events,
    test_gateway_charges,
    test_gateway_refunds,
);
