//! Money: decimal text (or a JSON number's exact text) -> integer minor units of an ISO 4217
//! currency, never through floating point.
//!
//! Accepted spellings: `12.99`, `+12.99`, `-0.5`, `1,299.99` (comma thousands groups),
//! `$12.99` / `€`, `£`, `¥` prefixes, `USD 12.99` / `12.99 USD` (the code must match the
//! currency asked for), `12.990`. An amount finer than the currency's minor unit is rounded
//! half away from zero and kept exactly in `exact`, with a note.

use mallgate_schemas::Money;

use super::Note;

/// ISO 4217 active codes by minor-unit exponent (2 unless listed under 0, 3 or 4).
const EXPONENT_0: &str = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF";
const EXPONENT_3: &str = "BHD IQD JOD KWD LYD OMR TND";
const EXPONENT_4: &str = "CLF UYW";
const EXPONENT_2: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL \
BSD BTN BWP BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP \
GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR \
LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN \
PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB \
TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES WST XCD YER ZAR ZMW ZWG";

/// The minor-unit exponent of an ISO 4217 code, or `None` for an unknown code.
pub fn exponent(currency: &str) -> Option<u32> {
    let has = |list: &str| list.split_ascii_whitespace().any(|c| c == currency);
    if has(EXPONENT_2) {
        Some(2)
    } else if has(EXPONENT_0) {
        Some(0)
    } else if has(EXPONENT_3) {
        Some(3)
    } else if has(EXPONENT_4) {
        Some(4)
    } else {
        None
    }
}

/// Why an amount could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoneyError {
    UnknownCurrency(String),
    NotAnAmount(String),
    CurrencyMismatch { asked: String, found: String },
    OutOfRange(String),
}

impl std::fmt::Display for MoneyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownCurrency(c) => write!(f, "`{c}` is not an ISO 4217 currency code"),
            Self::NotAnAmount(t) => write!(f, "`{t}` is not a money amount"),
            Self::CurrencyMismatch { asked, found } => {
                write!(f, "amount is in {found}, expected {asked}")
            }
            Self::OutOfRange(t) => write!(f, "amount `{t}` is out of range"),
        }
    }
}

/// Converts `amount` (text) in `currency` to [`Money`], with a note when the amount is finer
/// than the currency's minor unit.
pub fn parse(amount: &str, currency: &str) -> Result<(Money, Option<Note>), MoneyError> {
    let exp = exponent(currency).ok_or_else(|| MoneyError::UnknownCurrency(currency.to_owned()))?;
    let not_amount = || MoneyError::NotAnAmount(amount.to_owned());

    let mut text = amount.trim();
    // A currency code before or after the number must be the one asked for.
    for code in [text.get(..3), text.get(text.len().saturating_sub(3)..)]
        .into_iter()
        .flatten()
    {
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            if code != currency {
                return Err(MoneyError::CurrencyMismatch {
                    asked: currency.to_owned(),
                    found: code.to_owned(),
                });
            }
            text = text
                .strip_prefix(code)
                .or_else(|| text.strip_suffix(code))
                .unwrap_or(text)
                .trim();
        }
    }
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let rest = ["$", "€", "£", "¥"]
        .iter()
        .find_map(|symbol| rest.strip_prefix(symbol))
        .unwrap_or(rest)
        .trim_start();

    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    let int = strip_thousands(int).ok_or_else(not_amount)?;
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(not_amount());
    }
    let significant_frac = frac.trim_end_matches('0');
    let exp_len = exp as usize;
    let kept = &frac[..frac.len().min(exp_len)];
    let mut minor: i128 = 0;
    for digit in int.bytes().chain(kept.bytes()).chain(std::iter::repeat_n(
        b'0',
        exp_len.saturating_sub(kept.len()),
    )) {
        minor = minor
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(digit - b'0')))
            .ok_or_else(|| MoneyError::OutOfRange(amount.to_owned()))?;
    }
    let mut note = None;
    let mut exact = None;
    if significant_frac.len() > exp_len {
        // Finer than the minor unit: round half away from zero, keep the exact amount.
        if frac.as_bytes()[exp_len] >= b'5' {
            minor += 1;
        }
        let int_text = if int.is_empty() {
            "0"
        } else {
            int.trim_start_matches('0')
        };
        let int_text = if int_text.is_empty() { "0" } else { int_text };
        let text = format!(
            "{}{int_text}.{significant_frac}",
            if negative { "-" } else { "" }
        );
        note = Some(Note {
            code: "sub_unit_amount",
            message: format!(
                "{text} {currency} is finer than the currency's minor unit; rounded half away from zero"
            ),
        });
        exact = Some(text);
    }
    let signed = if negative { -minor } else { minor };
    let amount_minor =
        i64::try_from(signed).map_err(|_| MoneyError::OutOfRange(amount.to_owned()))?;
    Ok((
        Money {
            amount_minor,
            currency: currency.to_owned(),
            exact,
        },
        note,
    ))
}

/// `1,299` -> `1299`; commas are accepted only as thousands separators.
fn strip_thousands(int: &str) -> Option<String> {
    if !int.contains(',') {
        return Some(int.to_owned());
    }
    let groups: Vec<&str> = int.split(',').collect();
    let first_ok = (1..=3).contains(&groups[0].len());
    let rest_ok = groups[1..].iter().all(|g| g.len() == 3);
    (first_ok && rest_ok).then(|| groups.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minor(amount: &str, currency: &str) -> i64 {
        parse(amount, currency)
            .unwrap_or_else(|e| panic!("{amount}: {e}"))
            .0
            .amount_minor
    }

    #[test]
    fn five_spellings_of_12_99_usd() {
        for spelling in [
            "12.99",
            "$12.99",
            "USD 12.99",
            "12.99 USD",
            "12.990",
            " +12.99 ",
        ] {
            assert_eq!(minor(spelling, "USD"), 1299, "{spelling}");
        }
    }

    #[test]
    fn exponents_0_2_and_3() {
        assert_eq!(minor("1500", "JPY"), 1500);
        assert_eq!(minor("¥1,500", "JPY"), 1500);
        assert_eq!(minor("12.345", "BHD"), 12345);
        assert_eq!(minor("849.99", "USD"), 84999);
        assert_eq!(minor("1,299.99", "USD"), 129999);
        assert_eq!(minor("-0.50", "EUR"), -50);
        assert_eq!(minor(".5", "USD"), 50);
        assert_eq!(minor("7", "USD"), 700);
    }

    #[test]
    fn sub_unit_amounts_are_kept_exactly() {
        let (money, note) = parse("0.125", "USD").expect("valid");
        assert_eq!(money.amount_minor, 13);
        assert_eq!(money.exact.as_deref(), Some("0.125"));
        assert_eq!(note.expect("a note").code, "sub_unit_amount");
        let (money, _) = parse("-0.125", "USD").expect("valid");
        assert_eq!(
            (money.amount_minor, money.exact.as_deref()),
            (-13, Some("-0.125"))
        );
        let (money, _) = parse("1500.4", "JPY").expect("valid");
        assert_eq!(
            (money.amount_minor, money.exact.as_deref()),
            (1500, Some("1500.4"))
        );
        // Trailing zeros are not extra precision.
        assert_eq!(parse("12.9900", "USD").expect("valid").1, None);
    }

    #[test]
    fn bad_amounts_are_errors() {
        assert_eq!(
            parse("12.99", "XXY").expect_err("currency"),
            MoneyError::UnknownCurrency("XXY".into())
        );
        assert_eq!(
            parse("EUR 12.99", "USD").expect_err("mismatch"),
            MoneyError::CurrencyMismatch {
                asked: "USD".into(),
                found: "EUR".into()
            }
        );
        for bad in ["", "abc", "12,99", "1.2.3", "1e3", "12.99.", "--1", "$"] {
            assert!(parse(bad, "USD").is_err(), "{bad}");
        }
        assert!(matches!(
            parse("99999999999999999999999", "USD"),
            Err(MoneyError::OutOfRange(_))
        ));
    }
}
