//! A small exact decimal for unit conversions: a mantissa and a scale, parsed from text,
//! multiplied by exact factors, rounded once at the end. Never a float on the way.

use std::fmt;

/// `mantissa × 10^-scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    pub mantissa: i128,
    pub scale: u32,
}

/// Most significant digits accepted in a partner's number (keeps products inside i128).
const MAX_DIGITS: usize = 24;

impl Decimal {
    pub const fn new(mantissa: i128, scale: u32) -> Self {
        Self { mantissa, scale }
    }

    /// Reads `12`, `-0.5`, `+3.25`, `.5`, `1.5e3`, `2E-2` (surrounding spaces allowed).
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let (t, negative) = match t.as_bytes().first()? {
            b'-' => (&t[1..], true),
            b'+' => (&t[1..], false),
            _ => (t, false),
        };
        let (number, exp) = match t.find(['e', 'E']) {
            Some(i) => (&t[..i], Some(&t[i + 1..])),
            None => (t, None),
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > MAX_DIGITS {
            return None;
        }
        let mut mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let mut scale = i64::try_from(frac.len()).ok()?;
        if let Some(exp) = exp {
            let exp: i64 = exp.parse().ok()?;
            scale = scale.checked_sub(exp)?;
        }
        if scale < 0 {
            let up = u32::try_from(-scale).ok()?;
            mantissa = mantissa.checked_mul(10i128.checked_pow(up)?)?;
            if mantissa.unsigned_abs() >= 10u128.pow(MAX_DIGITS as u32) {
                return None;
            }
            scale = 0;
        }
        let scale = u32::try_from(scale).ok().filter(|s| *s <= 30)?;
        if negative {
            mantissa = -mantissa;
        }
        Some(Self { mantissa, scale })
    }

    pub fn is_negative(self) -> bool {
        self.mantissa < 0
    }

    /// The exact product, or `None` on overflow.
    pub fn checked_mul(self, other: Self) -> Option<Self> {
        Some(Self {
            mantissa: self.mantissa.checked_mul(other.mantissa)?,
            scale: self.scale.checked_add(other.scale).filter(|s| *s <= 60)?,
        })
    }

    /// The exact quotient rounded to `scale` digits, rounding `mode`.
    pub fn checked_div(self, other: Self, scale: u32, mode: Round) -> Option<Self> {
        if other.mantissa == 0 {
            return None;
        }
        // self/other = (m1 / m2) × 10^(s2 - s1); want q × 10^-scale.
        let shift = i64::from(scale) + i64::from(other.scale) - i64::from(self.scale);
        let (num, den) = if shift >= 0 {
            (
                self.mantissa
                    .checked_mul(10i128.checked_pow(u32::try_from(shift).ok()?)?)?,
                other.mantissa,
            )
        } else {
            (
                self.mantissa,
                other
                    .mantissa
                    .checked_mul(10i128.checked_pow(u32::try_from(-shift).ok()?)?)?,
            )
        };
        Some(Self {
            mantissa: divide(num, den, mode),
            scale,
        })
    }

    /// Rounded to at most `scale` fractional digits.
    pub fn round(self, scale: u32, mode: Round) -> Self {
        if self.scale <= scale {
            return self;
        }
        let Some(div) = 10i128.checked_pow(self.scale - scale) else {
            return Self::new(0, scale);
        };
        Self {
            mantissa: divide(self.mantissa, div, mode),
            scale,
        }
    }

    /// The nearest `f64` (for schema fields that are plain JSON numbers).
    pub fn to_f64(self) -> f64 {
        self.to_string().parse().unwrap_or(f64::NAN)
    }
}

/// How a division or rounding breaks ties and remainders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Half away from zero.
    HalfUp,
    /// Toward positive infinity (declared shipping weights are never under-stated).
    Ceiling,
}

fn divide(num: i128, den: i128, mode: Round) -> i128 {
    let (q, r) = (num / den, num % den);
    if r == 0 {
        return q;
    }
    let positive = (num < 0) == (den < 0);
    match mode {
        Round::HalfUp => {
            if r.unsigned_abs() * 2 >= den.unsigned_abs() {
                if positive { q + 1 } else { q - 1 }
            } else {
                q
            }
        }
        Round::Ceiling => {
            if positive {
                q + 1
            } else {
                q
            }
        }
    }
}

impl fmt::Display for Decimal {
    /// Plain decimal text without trailing fractional zeros: `1360.777`, `-0.5`, `12`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = self.scale as usize;
        let (int, frac) = if digits.len() > scale {
            digits.split_at(digits.len() - scale)
        } else {
            ("0", digits.as_str())
        };
        let pad = scale.saturating_sub(frac.len());
        let frac = format!("{}{frac}", "0".repeat(pad));
        let frac = frac.trim_end_matches('0');
        if self.mantissa < 0 {
            f.write_str("-")?;
        }
        f.write_str(int)?;
        if !frac.is_empty() {
            write!(f, ".{frac}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).expect("decimal")
    }

    #[test]
    fn parses_and_prints() {
        for (input, shown) in [
            ("12", "12"),
            ("-0.5", "-0.5"),
            ("+3.250", "3.25"),
            (".5", "0.5"),
            ("1.5e3", "1500"),
            ("2E-2", "0.02"),
            ("007", "7"),
            (" 4.0 ", "4"),
        ] {
            assert_eq!(d(input).to_string(), shown, "{input}");
        }
        for bad in [
            "", "-", ".", "1.2.3", "abc", "1e", "1e999", "12 kg", "1_000",
        ] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
        assert_eq!(Decimal::parse(&"9".repeat(40)), None);
    }

    #[test]
    fn multiplies_and_rounds_exactly() {
        let pound = d("453.59237");
        assert_eq!(
            d("3").checked_mul(pound).map(|x| x.to_string()),
            Some("1360.77711".into())
        );
        let g = d("3").checked_mul(pound).expect("product");
        assert_eq!(g.round(3, Round::HalfUp).to_string(), "1360.777");
        assert_eq!(d("0.0005").round(3, Round::HalfUp).to_string(), "0.001");
        assert_eq!(d("-0.0005").round(3, Round::HalfUp).to_string(), "-0.001");
        assert_eq!(d("1.0001").round(3, Round::Ceiling).to_string(), "1.001");
    }

    #[test]
    fn divides_with_rounding() {
        let q = d("1000").checked_div(d("28.349523125"), 1, Round::Ceiling);
        assert_eq!(q.map(|x| x.to_string()), Some("35.3".into()));
        assert_eq!(d("1").checked_div(d("0"), 2, Round::HalfUp), None);
        assert_eq!(
            d("2")
                .checked_div(d("3"), 3, Round::HalfUp)
                .map(|x| x.to_string()),
            Some("0.667".into())
        );
    }
}
