//! Money as the API carries it (`backbone.common.v1.Money`): an ISO 4217 code and an integer
//! count of that currency's minor units, checked here once for every service.

use backbone_proto::common::Money;

use crate::error::FieldViolation;

/// Largest amount accepted, in minor units: 10^15 (ten trillion euros), far below `i64::MAX` so
/// sums of many lines cannot overflow.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;

/// A checked amount: a known currency with minor units, and a non-negative amount.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Amount {
    /// ISO 4217 alphabetic code, e.g. "EUR".
    pub currency_code: String,
    /// Minor units (cents for EUR).
    pub amount_minor: i64,
}

impl Amount {
    /// The API message.
    pub fn to_api(&self) -> Money {
        Money {
            currency_code: self.currency_code.clone(),
            amount_minor: self.amount_minor,
        }
    }
}

/// The number of decimal places of `code`'s minor unit, if `code` is an ISO 4217 currency that
/// has one (0 for JPY, 2 for EUR, 3 for KWD). Funds and metals (XAU, XXX) have none.
pub fn exponent(code: &str) -> Option<u16> {
    iso_currency::Currency::from_code(code).and_then(|currency| currency.exponent())
}

/// Checks `money` (the field at `field`): required, a known ISO 4217 code written in upper case
/// with a minor unit, and an amount from 0 to [`MAX_AMOUNT_MINOR`].
pub fn check(money: Option<&Money>, field: &str) -> Result<Amount, Vec<FieldViolation>> {
    let Some(money) = money else {
        return Err(vec![FieldViolation::new(field, "is required")]);
    };
    let mut violations = Vec::new();
    let code = &money.currency_code;
    let well_formed = code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase());
    if !well_formed {
        violations.push(FieldViolation::new(
            format!("{field}.currency_code"),
            "must be an ISO 4217 code of three upper-case letters, e.g. EUR",
        ));
    } else if exponent(code).is_none() {
        violations.push(FieldViolation::new(
            format!("{field}.currency_code"),
            format!("{code} is not an ISO 4217 currency with minor units"),
        ));
    }
    if !(0..=MAX_AMOUNT_MINOR).contains(&money.amount_minor) {
        violations.push(FieldViolation::new(
            format!("{field}.amount_minor"),
            "must be between 0 and 10^15 minor units",
        ));
    }
    if violations.is_empty() {
        Ok(Amount {
            currency_code: code.clone(),
            amount_minor: money.amount_minor,
        })
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(code: &str, amount_minor: i64) -> Money {
        Money {
            currency_code: code.into(),
            amount_minor,
        }
    }

    #[test]
    fn known_currencies_with_minor_units_pass() {
        for (code, exp) in [("EUR", 2), ("JPY", 0), ("KWD", 3)] {
            assert_eq!(exponent(code), Some(exp));
            assert!(check(Some(&money(code, 1234)), "price").is_ok());
        }
    }

    #[test]
    fn bad_money_names_the_field() {
        let fields = |m: Option<&Money>| -> Vec<String> {
            check(m, "price")
                .expect_err("refused")
                .into_iter()
                .map(|v| v.field)
                .collect()
        };
        assert_eq!(fields(None), ["price"]);
        assert_eq!(fields(Some(&money("eur", 1))), ["price.currency_code"]);
        assert_eq!(fields(Some(&money("ABC", 1))), ["price.currency_code"]);
        assert_eq!(fields(Some(&money("XAU", 1))), ["price.currency_code"]);
        assert_eq!(fields(Some(&money("EUR", -1))), ["price.amount_minor"]);
    }
}
