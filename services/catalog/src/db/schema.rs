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
    }
}
