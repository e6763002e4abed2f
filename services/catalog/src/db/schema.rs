//! Diesel schema of the catalog database, in types both backends share (Text ids, BigInt money,
//! Timestamp in UTC).

diesel::table! {
    products (id) {
        id -> Text,
        sku -> Text,
        title -> Text,
        description -> Text,
        price_minor -> BigInt,
        currency_code -> Text,
        status -> Text,
        version -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        attributes -> Text,
        image_urls -> Text,
        search_text -> Text,
        category_ids -> Text,
    }
}

diesel::table! {
    categories (id) {
        id -> Text,
        slug -> Text,
        name -> Text,
        parent_id -> Nullable<Text>,
        version -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    product_categories (product_id, category_id) {
        product_id -> Text,
        category_id -> Text,
    }
}

diesel::table! {
    stock (product_id) {
        product_id -> Text,
        on_hand -> BigInt,
        reserved -> BigInt,
        updated_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    stock_movements (id) {
        id -> Text,
        product_id -> Text,
        kind -> Text,
        delta -> BigInt,
        on_hand_after -> BigInt,
        reason -> Text,
        reservation_id -> Nullable<Text>,
        actor_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    stock_adjustment_requests (actor_id, request_id) {
        actor_id -> Text,
        request_id -> Text,
        fingerprint -> Text,
        movement_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    reservations (id) {
        id -> Text,
        fingerprint -> Text,
        state -> Text,
        owner_id -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    reservation_items (reservation_id, product_id) {
        reservation_id -> Text,
        position -> Integer,
        product_id -> Text,
        quantity -> BigInt,
    }
}

diesel::joinable!(product_categories -> products (product_id));
diesel::joinable!(product_categories -> categories (category_id));
diesel::joinable!(stock -> products (product_id));
diesel::joinable!(stock_movements -> products (product_id));
diesel::joinable!(reservation_items -> reservations (reservation_id));

diesel::allow_tables_to_appear_in_same_query!(
    products,
    categories,
    product_categories,
    stock,
    stock_movements,
    stock_adjustment_requests,
    reservations,
    reservation_items,
);
