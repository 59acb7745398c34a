//! Units: weights to grams and lengths to millimetres with exact factors (1 lb is exactly
//! 453.59237 g, 1 in exactly 25.4 mm), rounded once to a thousandth, the partner's value and
//! unit kept as given. The other way round for requests: grams to pounds + ounces or to a
//! unit's decimal text, rounded up so a declared shipping weight is never under-stated.

use mallgate_schemas::{Dimensions, OriginalDimensions, OriginalMeasure, Weight};

use super::decimal::{Decimal, Round};

/// Decimal places kept after conversion (a milligram, a micrometre).
const SCALE: u32 = 3;

/// A unit of weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightUnit {
    Gram,
    Kilogram,
    Ounce,
    Pound,
}

impl WeightUnit {
    /// Reads a partner's unit name, case-insensitively: `g`, `grams`, `kg`, `KGS`, `oz`,
    /// `lb`, `LBS`, `pounds`...
    pub fn parse(unit: &str) -> Option<Self> {
        Some(match unit.trim().to_ascii_lowercase().as_str() {
            "g" | "gr" | "gram" | "grams" | "gm" | "gms" => Self::Gram,
            "kg" | "kgs" | "kilo" | "kilos" | "kilogram" | "kilograms" => Self::Kilogram,
            "oz" | "ozs" | "ounce" | "ounces" => Self::Ounce,
            "lb" | "lbs" | "pound" | "pounds" => Self::Pound,
            _ => return None,
        })
    }

    fn grams(self) -> Decimal {
        match self {
            Self::Gram => Decimal::new(1, 0),
            Self::Kilogram => Decimal::new(1000, 0),
            Self::Ounce => Decimal::new(28_349_523_125, 9),
            Self::Pound => Decimal::new(45_359_237, 5),
        }
    }
}

/// A unit of length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthUnit {
    Millimetre,
    Centimetre,
    Metre,
    Inch,
    Foot,
}

impl LengthUnit {
    /// Reads a partner's unit name, case-insensitively: `mm`, `cm`, `m`, `in`, `inches`, `ft`...
    pub fn parse(unit: &str) -> Option<Self> {
        Some(match unit.trim().to_ascii_lowercase().as_str() {
            "mm" | "millimetre" | "millimetres" | "millimeter" | "millimeters" => Self::Millimetre,
            "cm" | "centimetre" | "centimetres" | "centimeter" | "centimeters" => Self::Centimetre,
            "m" | "metre" | "metres" | "meter" | "meters" => Self::Metre,
            "in" | "inch" | "inches" | "\"" => Self::Inch,
            "ft" | "foot" | "feet" => Self::Foot,
            _ => return None,
        })
    }

    fn millimetres(self) -> Decimal {
        match self {
            Self::Millimetre => Decimal::new(1, 0),
            Self::Centimetre => Decimal::new(10, 0),
            Self::Metre => Decimal::new(1000, 0),
            Self::Inch => Decimal::new(254, 1),
            Self::Foot => Decimal::new(3048, 1),
        }
    }
}

/// Why a measure could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitError {
    UnknownUnit(String),
    NotANumber(String),
    Negative(String),
    OutOfRange(String),
}

impl std::fmt::Display for UnitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownUnit(u) => write!(f, "`{u}` is not a known unit"),
            Self::NotANumber(v) => write!(f, "`{v}` is not a number"),
            Self::Negative(v) => write!(f, "`{v}` is negative"),
            Self::OutOfRange(v) => write!(f, "`{v}` is out of range"),
        }
    }
}

fn amount(value: &str) -> Result<Decimal, UnitError> {
    let d = Decimal::parse(value).ok_or_else(|| UnitError::NotANumber(value.to_owned()))?;
    if d.is_negative() {
        return Err(UnitError::Negative(value.to_owned()));
    }
    Ok(d)
}

fn convert(value: &str, factor: Decimal) -> Result<Decimal, UnitError> {
    amount(value)?
        .checked_mul(factor)
        .map(|d| d.round(SCALE, Round::HalfUp))
        .ok_or_else(|| UnitError::OutOfRange(value.to_owned()))
}

/// `value` in `unit` as a [`Weight`] in grams, the original kept.
pub fn grams(value: &str, unit: &str) -> Result<Weight, UnitError> {
    let u = WeightUnit::parse(unit).ok_or_else(|| UnitError::UnknownUnit(unit.to_owned()))?;
    Ok(Weight {
        grams: convert(value, u.grams())?.to_f64(),
        original: Some(OriginalMeasure {
            value: value.trim().to_owned(),
            unit: unit.trim().to_owned(),
        }),
    })
}

/// A weight given as pounds plus ounces (ParcelPost's `<Pounds>` + `<Ounces>`).
pub fn grams_lb_oz(pounds: &str, ounces: &str) -> Result<Weight, UnitError> {
    let range = || UnitError::OutOfRange(format!("{pounds} lb {ounces} oz"));
    // Both exact at scale 9 (an ounce has 9 decimals, a pound 5), summed, rounded once.
    let exact = |value: &str, unit: WeightUnit| -> Result<i128, UnitError> {
        let g = amount(value)?.checked_mul(unit.grams()).ok_or_else(range)?;
        let up = 18u32.checked_sub(g.scale).ok_or_else(range)?;
        g.mantissa.checked_mul(10i128.pow(up)).ok_or_else(range)
    };
    let sum = exact(pounds, WeightUnit::Pound)?
        .checked_add(exact(ounces, WeightUnit::Ounce)?)
        .ok_or_else(range)?;
    let total = Decimal::new(sum, 18).round(SCALE, Round::HalfUp);
    Ok(Weight {
        grams: total.to_f64(),
        original: Some(OriginalMeasure {
            value: format!("{} lb {} oz", pounds.trim(), ounces.trim()),
            unit: "lb+oz".to_owned(),
        }),
    })
}

/// Length, width and height in `unit` as [`Dimensions`] in millimetres, the originals kept.
pub fn dimensions(
    length: &str,
    width: &str,
    height: &str,
    unit: &str,
) -> Result<Dimensions, UnitError> {
    let u = LengthUnit::parse(unit).ok_or_else(|| UnitError::UnknownUnit(unit.to_owned()))?;
    let mm = |v: &str| convert(v, u.millimetres()).map(Decimal::to_f64);
    Ok(Dimensions {
        length_mm: mm(length)?,
        width_mm: mm(width)?,
        height_mm: mm(height)?,
        original: Some(OriginalDimensions {
            length: length.trim().to_owned(),
            width: width.trim().to_owned(),
            height: height.trim().to_owned(),
            unit: unit.trim().to_owned(),
        }),
    })
}

/// Grams as a carrier wants them: whole pounds and ounces to a tenth, rounded up.
pub fn pounds_ounces(grams: &str) -> Result<(u64, Decimal), UnitError> {
    let g = amount(grams)?;
    let ounces = g
        .checked_div(WeightUnit::Ounce.grams(), 1, Round::Ceiling)
        .ok_or_else(|| UnitError::OutOfRange(grams.to_owned()))?;
    // 16 oz = 160 tenths.
    let tenths = ounces.mantissa;
    let pounds =
        u64::try_from(tenths / 160).map_err(|_| UnitError::OutOfRange(grams.to_owned()))?;
    Ok((pounds, Decimal::new(tenths % 160, 1)))
}

/// Grams as decimal text in `unit`, to a thousandth, rounded up: `1250` g -> `"1.25"` kg.
pub fn weight_text(grams: &str, unit: &str) -> Result<String, UnitError> {
    let u = WeightUnit::parse(unit).ok_or_else(|| UnitError::UnknownUnit(unit.to_owned()))?;
    amount(grams)?
        .checked_div(u.grams(), SCALE, Round::Ceiling)
        .map(|d| d.to_string())
        .ok_or_else(|| UnitError::OutOfRange(grams.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_in_every_unit() {
        for (value, unit, g) in [
            ("500", "g", 500.0),
            ("1.25", "kg", 1250.0),
            ("2.5", "KGS", 2500.0),
            ("3", "LBS", 1360.777),
            ("1", "lb", 453.592),
            ("16", "oz", 453.592),
            ("0", "grams", 0.0),
        ] {
            let w = grams(value, unit).expect(unit);
            assert_eq!(w.grams, g, "{value} {unit}");
            let original = w.original.expect("original kept");
            assert_eq!(
                (original.value.as_str(), original.unit.as_str()),
                (value, unit)
            );
        }
        assert_eq!(
            grams("1", "stone"),
            Err(UnitError::UnknownUnit("stone".into()))
        );
        assert_eq!(grams("-1", "g"), Err(UnitError::Negative("-1".into())));
        assert_eq!(
            grams("heavy", "g"),
            Err(UnitError::NotANumber("heavy".into()))
        );
    }

    #[test]
    fn pounds_plus_ounces() {
        // 2 lb 3 oz = 907.18474 + 85.048569375 = 992.233309375 g.
        let w = grams_lb_oz("2", "3").expect("lb+oz");
        assert_eq!(w.grams, 992.233);
        assert_eq!(
            w.original,
            Some(OriginalMeasure {
                value: "2 lb 3 oz".into(),
                unit: "lb+oz".into()
            })
        );
        assert_eq!(grams_lb_oz("0", "8.5").map(|w| w.grams), Ok(240.971));
    }

    #[test]
    fn requests_never_understate_weight() {
        // 1000 g = 35.27 oz -> 2 lb 3.3 oz.
        let (lb, oz) = pounds_ounces("1000").expect("lb/oz");
        assert_eq!((lb, oz.to_string()), (2, "3.3".to_owned()));
        let (lb, oz) = pounds_ounces("453.59237").expect("exactly a pound");
        assert_eq!((lb, oz.to_string()), (1, "0".to_owned()));
        assert_eq!(weight_text("1250", "kg").as_deref(), Ok("1.25"));
        assert_eq!(weight_text("1", "kg").as_deref(), Ok("0.001"));
        assert_eq!(weight_text("0.1", "kg").as_deref(), Ok("0.001"));
        assert_eq!(weight_text("1000", "lb").as_deref(), Ok("2.205"));
    }

    #[test]
    fn dimensions_to_millimetres() {
        let d = dimensions("10", "4.5", "0.25", "in").expect("inches");
        assert_eq!((d.length_mm, d.width_mm, d.height_mm), (254.0, 114.3, 6.35));
        let d = dimensions("30", "20", "1.5", "cm").expect("cm");
        assert_eq!((d.length_mm, d.width_mm, d.height_mm), (300.0, 200.0, 15.0));
        assert!(dimensions("1", "2", "3", "furlong").is_err());
    }
}
