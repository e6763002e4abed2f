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
        roles -> Text,
        disabled_at -> Nullable<Timestamp>,
        version -> BigInt,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> Text,
        user_agent -> Text,
        client_address -> Text,
        created_at -> Timestamp,
        last_used_at -> Timestamp,
        expires_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
        revoke_reason -> Nullable<Text>,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Text,
        session_id -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        rotated_at -> Nullable<Timestamp>,
        successor_hash -> Nullable<Text>,
        successor_sealed -> Nullable<Text>,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        public_key -> Text,
        private_key_sealed -> Text,
        active -> Bool,
        created_at -> Timestamp,
        retired_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    service_accounts (id) {
        id -> Text,
        display_name -> Text,
        secret_hash -> Text,
        roles -> Text,
        creator_id -> Text,
        created_at -> Timestamp,
        disabled -> Bool,
    }
}

diesel::table! {
    login_throttles (throttle_key) {
        throttle_key -> Text,
        attempts -> BigInt,
        last_attempt_at -> Timestamp,
        blocked_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    one_time_tokens (token_hash) {
        token_hash -> Text,
        purpose -> Text,
        user_id -> Text,
        email -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    outbox (id) {
        id -> Text,
        recipient -> Text,
        subject -> Text,
        body -> Text,
        created_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Text,
        event_type -> Text,
        actor_id -> Nullable<Text>,
        subject_id -> Nullable<Text>,
        client_address -> Text,
        trace_id -> Text,
        details -> Text,
        created_at -> Timestamp,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::joinable!(one_time_tokens -> users (user_id));
diesel::joinable!(social_identities -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    sessions,
    refresh_tokens,
    signing_keys,
    service_accounts,
    login_throttles,
    one_time_tokens,
    outbox,
    audit_events,
    social_identities,
    social_login_states,
);

diesel::table! {
    social_identities (provider, subject) {
        provider -> Text,
        subject -> Text,
        user_id -> Text,
        email -> Text,
        linked_at -> Timestamp,
    }
}

diesel::table! {
    social_login_states (state_hash) {
        state_hash -> Text,
        provider -> Text,
        intent -> Text,
        user_id -> Nullable<Text>,
        secrets_sealed -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
    }
}
