//! Diesel schema of the auth database, in types both backends share (Text ids, Timestamp in UTC).

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        email_normalized -> Text,
        display_name -> Text,
        password_hash -> Nullable<Text>,
        email_verified -> Bool,
        disabled -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}
