//! Diesel schema of the billing database, in types both backends share (Text ids, BigInt money,
//! Timestamp in UTC).

diesel::table! {
    orders (id) {
        id -> Text,
        customer_id -> Text,
        status -> Text,
        currency_code -> Text,
        total_minor -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}
