DROP TABLE social_login_states;
DROP TABLE social_identities;
